"""Distillation engine: tiny teacher -> tiny student on CPU, resume after interruption, pool, losses, stage kill."""
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from edgestylegan.artifacts.distill import DistillRecord
from edgestylegan.config import SCHEMA, ParamsError, defaults, validate
from edgestylegan.distill.augment import diff_augment, parse_policy
from edgestylegan.distill.losses import PerceptualLoss, image_pyramid, pyramid_loss, r1_penalty
from edgestylegan.distill.students import build_student, export_student, tame_new_modulations
from edgestylegan.imaging import psnr
from edgestylegan.distill.targets import PoolBatches, PoolSpec, TeacherRenderer, build_pool, latents, load_pool
from edgestylegan.distill.teachers import Teacher
from edgestylegan.distill.trainer import NOT_TRAINING, TrainConfig, train
from edgestylegan.errors import UserError
from edgestylegan.io.checkpoint import load_generator, save_generator
from edgestylegan.models.discriminator import Discriminator
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig
from edgestylegan.models.wavelets import dwt_haar

STYLE_DIM = 32
TEACHER_CONFIG = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=64, channels=(32, 32, 32, 32, 16))
STUDENT_CONFIG = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=32, channels=(32, 32, 32, 32),
                                 all_heads=True)


def make_teacher(seed=0) -> Generator:
    """A random MobileStyleGAN whose images have a sane range (pretrained-like scale, std 0.5)."""
    torch.manual_seed(seed)
    gen = Generator(TEACHER_CONFIG).eval()
    tame_new_modulations(gen, set())
    gen.estimate_w_avg(256, 0)
    with torch.no_grad():
        std = gen(torch.randn(64, STYLE_DIM)).std()
        head = gen.synthesis.blocks[-1].to_img.conv.conv
        head.weight.mul_(0.5 / std)
        head.bias.mul_(0.5 / std)
    return gen.requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill")
    teacher = Teacher("mobilestylegan", make_teacher(), "t" * 64, "test", {})
    spec = PoolSpec(train_size=64, train_seed=1, val_size=8, val_seed=2, truncation=1.0, resolution=32,
                    teacher_sha256="t" * 64)
    pool = build_pool(teacher, spec, folder / "pool.safetensors", folder / "cache", "torch", progress=False)
    return teacher, pool, folder


def _config(**kw) -> TrainConfig:
    """The schema's distill defaults with a tiny run's overrides, validated as a stage would."""
    base = dict(steps=120, batch_size=4, lr=3e-3, lr_pretrained=3e-3, sample_every=1000, checkpoint_every=1000,
                head_init="random")
    return TrainConfig.from_params(validate({"distill": {**base, **kw}}, ["distill"])["distill"])


def test_train_config_takes_every_training_key_from_the_schema():
    d = defaults()["distill"]
    cfg = TrainConfig.from_params(d)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields | set(NOT_TRAINING) == set(SCHEMA["distill"]) and not fields & set(NOT_TRAINING)
    assert all(getattr(cfg, name) == d[name] for name in fields)
    assert TrainConfig.from_params({**d, "steps": 7}).steps == 7
    with pytest.raises(KeyError, match="new_knob"):  # A schema key nobody placed is not dropped silently.
        TrainConfig.from_params({**d, "new_knob": 1})
    with pytest.raises(KeyError, match="lr_schedule"):
        TrainConfig.from_params({k: v for k, v in d.items() if k != "lr_schedule"})


def test_psnr_closed_form():
    # Images in [-1, 1], peak-to-peak 2: an error of exactly +-s at every pixel gives MSE s^2, PSNR 20 log10(2 / s).
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 16, 16, generator=g) - 0.5
    signs = torch.randint(0, 2, target.shape, generator=g) * 2.0 - 1
    for s in (0.5, 0.1, 0.01):
        expected = 20 * math.log10(2 / s)
        assert torch.allclose(psnr(target + s * signs, target), torch.full((3,), expected), atol=1e-3), s
    # Out-of-range predictions are clamped to [-1, 1] first: pred = 3 scores as pred = 1.
    per_image = ((1 - target.double()) ** 2).flatten(1).mean(1)
    assert torch.allclose(psnr(torch.full_like(target, 3.0), target).double(), 10 * torch.log10(4 / per_image),
                          atol=1e-4)


def test_tiny_student_halves_pixel_loss_in_120_steps(tiny_setup, tmp_path):
    # A fixed step budget, not a wall-clock limit (timings belong in benchmarks): 120 steps of this tiny
    # pair take well under 60 s on 2 idle cores.
    teacher, pool, _ = tiny_setup
    student, pretrained = build_student(STUDENT_CONFIG, teacher.model, "scratch")
    result = train(student, pretrained, PoolBatches(pool, 0), (pool.val_z, pool.val_images), _config(),
                   tmp_path / "resume.pt", "fp", progress=False)
    pixel = [r["train/l1"] + r["train/l2"] for r in result.history if "train/l1" in r]
    first, last = sum(pixel[:5]) / 5, sum(pixel[-5:]) / 5
    assert last <= 0.5 * first, (first, last)
    at_init = result.history[0]
    assert at_init["step"] == 0 and result.val["psnr_db"] > at_init["val/psnr_db"] + 10, (at_init, result.val)


def test_trunk_init_copies_teacher_and_export_round_trips(tiny_setup, tmp_path):
    teacher, pool, _ = tiny_setup
    student, pretrained = build_student(STUDENT_CONFIG, teacher.model, "teacher")
    t_state, s_state = teacher.model.state_dict(), student.state_dict()
    for key in ["synthesis.const", "synthesis.conv1.conv.conv.weight", "synthesis.blocks.1.conv2.conv.pointwise.weight",
                "synthesis.blocks.1.conv1.noise.noise_map", "mapping.layers.0.weight", "w_avg"]:
        assert torch.equal(s_state[key], t_state[key]), key
    assert "synthesis.blocks.1.to_img.conv.conv.weight" not in pretrained  # The teacher has no head there.
    # Same trunk, same latents, same noise: identical block features.
    feats = {}
    for name, gen in (("t", teacher.model), ("s", student)):
        hook = gen.synthesis.blocks[1].conv2.register_forward_hook(lambda m, a, o, n=name: feats.__setitem__(n, o))
        with torch.no_grad():
            gen.synthesis(gen.style(pool.val_z[:2]))
        hook.remove()
    assert torch.equal(feats["t"], feats["s"])

    exported = export_student(student)
    assert exported.synthesis.to_img1 is None and exported.synthesis.blocks[0].to_img is None
    save_generator(exported, tmp_path / "s.safetensors", {"kind": "test"})
    loaded = load_generator(tmp_path / "s.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(pool.val_z[:2]), student.eval()(pool.val_z[:2]))


def test_lstsq_head_init_beats_random(tiny_setup, tmp_path):
    teacher, pool, _ = tiny_setup
    scores = {}
    for init in ("random", "lstsq"):
        student, pretrained = build_student(STUDENT_CONFIG, teacher.model, "teacher")
        result = train(student, pretrained, PoolBatches(pool, 0), (pool.val_z, pool.val_images),
                       _config(steps=1, lr=1e-9, lr_pretrained=0.0, head_init=init, sample_every=1),
                       tmp_path / f"{init}.pt", init, progress=False)
        scores[init] = result.history[0]["val/psnr_db"]
    assert scores["lstsq"] > scores["random"] + 3, scores


def test_resume_continues_exactly(tiny_setup, tmp_path):
    teacher, pool, _ = tiny_setup
    cfg = _config(steps=12, checkpoint_every=4, w_gan=0.1, d_channel_base=128, d_channel_max=16, r1_interval=4,
                  head_init="lstsq", lr_pretrained=1e-4)

    def fresh():
        return build_student(STUDENT_CONFIG, teacher.model, "teacher", seed=0)

    val = (pool.val_z, pool.val_images)
    full, pre = fresh()
    train(full, pre, PoolBatches(pool, 0), val, cfg, tmp_path / "a.pt", "fp", progress=False)

    part, pre = fresh()
    first = train(part, pre, PoolBatches(pool, 0), val, cfg, tmp_path / "b.pt", "fp", progress=False, stop_after=6)
    assert first.steps == 6 and (tmp_path / "b.pt").is_file()
    resumed, pre = fresh()  # A new process: new objects, state only from the checkpoint.
    second = train(resumed, pre, PoolBatches(pool, 0), val, cfg, tmp_path / "b.pt", "fp", progress=False)
    assert second.resumed_from == 6 and second.steps == 12
    assert [r["step"] for r in second.history if "train/total" in r] == list(range(1, 13))
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k

    other, pre = fresh()  # A different configuration never picks up the stale checkpoint.
    third = train(other, pre, PoolBatches(pool, 0), val, cfg, tmp_path / "b.pt", "other-fp", progress=False,
                  stop_after=1)
    assert third.resumed_from == 0


def test_unreadable_resume_file_starts_fresh(tiny_setup, tmp_path):
    teacher, pool, _ = tiny_setup
    resume = tmp_path / "resume.pt"
    resume.write_bytes(b"\x80\x02 half a checkpoint")  # e.g. the disk filled up during a save
    student, pretrained = build_student(STUDENT_CONFIG, teacher.model, "teacher")
    result = train(student, pretrained, PoolBatches(pool, 0), (pool.val_z, pool.val_images), _config(steps=3),
                   resume, "fp", progress=False, stop_after=1)
    assert result.resumed_from == 0 and torch.load(resume, weights_only=True)["step"] == 1


@pytest.mark.slow
def test_openvino_teacher_renderer_follows_the_parity_policy():
    from edgestylegan.io.ir_reader import load_random_face_generator

    gen = load_random_face_generator().requires_grad_(False)
    teacher = Teacher("mobilestylegan", gen, "r" * 64, "random-face", {"source": "random-face IR"})
    with torch.no_grad():
        w = gen.style(latents(1, 0, gen.style_dim), 1.0)
    ok = TeacherRenderer(teacher, 256, "auto", "cpu", w)
    assert ok.runtime == "openvino" and ok.parity.fallback_reason is None
    assert 0 < ok.parity.max_abs <= ok.parity.tolerance
    # Same measurement, a tolerance below it: auto falls back to PyTorch and says why; asked-for OpenVINO fails.
    strict = ok.parity.max_abs / 2
    fallback = TeacherRenderer(teacher, 256, "auto", "cpu", w, parity_tol=strict)
    assert fallback.runtime == "torch" and fallback.parity.max_abs == ok.parity.max_abs
    assert "differs from torch" in fallback.parity.fallback_reason
    assert torch.equal(fallback.render(w), ok._torch(w))
    with pytest.raises(UserError, match="distill.teacher_runtime = openvino was asked for explicitly"):
        TeacherRenderer(teacher, 256, "openvino", "cpu", w, parity_tol=strict)


def test_pool_reuses_finished_chunks(tiny_setup, tmp_path):
    teacher, pool, _ = tiny_setup
    spec = PoolSpec(train_size=6, train_seed=1, val_size=2, val_seed=2, truncation=1.0, resolution=32,
                    teacher_sha256="t" * 64)
    from safetensors.torch import save_file

    chunk_dir = tmp_path / "cache" / spec.fingerprint()
    chunk_dir.mkdir(parents=True)
    marker = torch.full((4, 3, 32, 32), 0.25).half()  # Pretend a killed run finished chunk 0.
    save_file({"images": marker}, str(chunk_dir / "chunk-0000.safetensors"))
    built = build_pool(teacher, spec, tmp_path / "p.safetensors", tmp_path / "cache", "torch", chunk=4, progress=False)
    assert torch.equal(built.train_images[:4], marker)
    assert torch.allclose(built.train_images[4:6].float(), pool.train_images[4:6].float(), atol=1e-3)
    assert not chunk_dir.exists()  # Cleaned up once the pool file exists.
    loaded = load_pool(tmp_path / "p.safetensors")
    assert loaded.meta["fingerprint"] == spec.fingerprint() and len(loaded.val_z) == 2


def test_pyramid_loss_is_zero_on_the_teacher_pyramid():
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    pyramid = image_pyramid(target, [8, 16, 32])
    assert torch.allclose(pyramid[8], torch.nn.functional.interpolate(target, size=8, mode="area"), atol=1e-6)
    freqs = [dwt_haar(pyramid[s]) for s in (8, 16, 32)]
    terms = pyramid_loss(freqs, target)
    assert float(terms["l1"]) < 1e-6 and float(terms["l2"]) < 1e-10
    assert float(pyramid_loss([f + 0.1 for f in freqs], target)["l1"]) > 0.1


def test_gan_parts_are_differentiable():
    policy = parse_policy("color,translation,cutout,flip")
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    y = diff_augment(x, policy, g)
    assert torch.equal(y, diff_augment(x, policy, torch.Generator().manual_seed(0)))
    disc = Discriminator(32, channel_base=256, channel_max=32)
    logits = disc(y)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    penalty = r1_penalty(disc, x.detach())
    penalty.backward()
    assert math.isfinite(float(penalty.detach())) and disc.from_rgb.weight.grad is not None
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("color,zoom")


def test_enl0_perceptual_loss_offline():
    loss = PerceptualLoss("enl0", size=64)
    a = torch.rand(2, 3, 64, 64) * 2 - 1
    b = a.clone().requires_grad_(True)
    same = loss(b, a)
    assert float(same.detach()) < 1e-6
    other = loss((a + 0.3 * torch.randn_like(a)).requires_grad_(True), a)
    assert float(other.detach()) > 1e-3
    assert not any(p.requires_grad for p in loss.parameters())


def test_params_validation():
    ok = {"student": {"resolution": 256}, "distill": {}}
    assert validate(ok, ["student", "distill"])["distill"]["steps"] > 0
    with pytest.raises(ParamsError, match="power of two"):
        validate({"student": {"resolution": 300}, "distill": {}}, ["student"])
    with pytest.raises(ParamsError, match="needs 6 entries"):
        validate({"student": {"resolution": 256, "channels": [512, 512]}}, ["student"])
    with pytest.raises(ParamsError, match="stylegan2_sha256"):
        validate({"distill": {"teacher": "stylegan2", "stylegan2_url": "https://x/y.pt"}}, ["distill"])
    with pytest.raises(ParamsError, match="distill.augment"):
        validate({"distill": {"augment": "color,zoom"}}, ["distill"])


#----------------------------------------------------------------------------
# The real stage, killed with SIGKILL mid-training, resumes from its last checkpoint.


def _write_stage_workspace(folder: Path, steps: int) -> None:
    save_generator(make_teacher(), folder / "models" / "teacher.safetensors", {"source": "test"})
    params = {
        "student": {"resolution": 32, "channels": [32, 32, 32, 32], "init": "teacher", "all_heads": True},
        "distill": {"pool_size": 32, "val_size": 4, "steps": steps, "batch_size": 2, "checkpoint_every": 5,
                    "sample_every": 50, "sample_count": 4, "teacher_runtime": "torch", "device": "cpu"},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.slow
def test_stage_resumes_after_sigkill(tmp_path, root, venv_env):
    _write_stage_workspace(tmp_path, steps=150)
    run = lambda name: [sys.executable, str(root / "stages" / name)]  # noqa: E731
    subprocess.run(run("distill_pool.py"), cwd=tmp_path, env=venv_env, check=True, capture_output=True)
    resume = tmp_path / "data" / "cache" / "distill" / "resume.pt"
    proc = subprocess.Popen(run("distill.py"), cwd=tmp_path, env=venv_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not resume.is_file() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert resume.is_file(), "no checkpoint appeared"
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    saved_step = torch.load(resume, weights_only=True)["step"]
    assert 0 < saved_step < 150
    out = subprocess.run(run("distill.py"), cwd=tmp_path, env=venv_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming from" in out.stdout + out.stderr
    assert (tmp_path / "models" / "student.safetensors").is_file()
    assert not resume.exists()  # Removed once the student is written.
    record = DistillRecord.read(tmp_path / "metrics" / "distill.json")
    assert record.train["resumed_from"] >= saved_step and record.train["steps"] == 150
    assert record.renderer_parity == load_pool(tmp_path / "data" / "distill" / "pool.safetensors").meta["parity"]
    assert record.renderer_parity["runtime"] == "torch" and record.renderer_parity["max_abs"] is None


def test_frozen_trunk_trains_only_the_final_head_on_cached_features(tiny_setup, tmp_path):
    teacher, pool, _ = tiny_setup
    student, pretrained = build_student(STUDENT_CONFIG, teacher.model, "teacher")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = train(student, pretrained, PoolBatches(pool, 0), (pool.val_z, pool.val_images),
                   _config(steps=30, lr=1e-3, lr_pretrained=0.0, head_init="lstsq", sample_every=30),
                   tmp_path / "r.pt", "fp", progress=False)
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("synthesis.blocks.1.to_img.") for k in changed), changed
    assert result.history[-1]["val/psnr_db"] >= result.history[0]["val/psnr_db"] - 0.1


def test_narrower_last_block_is_channel_selected_and_retrained_on_cached_features(tiny_setup, tmp_path):
    teacher, pool, _ = tiny_setup
    narrow = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=32, channels=(32, 32, 24))
    student, pretrained = build_student(narrow, teacher.model, "teacher")
    t_block, s_block = teacher.model.synthesis.blocks[1].state_dict(), student.synthesis.blocks[1].state_dict()
    assert s_block["conv2.conv.pointwise.weight"].shape[:2] == (24, 24)
    assert torch.equal(s_block["conv1.conv.depthwise.weight"], t_block["conv1.conv.depthwise.weight"])
    # Selected output channels are teacher rows (a subset, in teacher order).
    rows = {tuple(r.flatten().tolist()) for r in t_block["conv1.conv.pointwise.weight"]}
    assert all(tuple(r.flatten().tolist()) in rows for r in s_block["conv1.conv.pointwise.weight"])
    assert not any(n.startswith("synthesis.blocks.1.") for n in pretrained)
    assert "synthesis.blocks.0.conv2.conv.pointwise.weight" in pretrained

    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = train(student, pretrained, PoolBatches(pool, 0), (pool.val_z, pool.val_images),
                   _config(steps=40, lr=2e-3, lr_pretrained=0.0, head_init="lstsq", sample_every=40),
                   tmp_path / "r.pt", "fp", progress=False)
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("synthesis.blocks.1.") for k in changed), changed
    assert "synthesis.blocks.1.conv2.conv.pointwise.weight" in changed
    assert result.history[-1]["val/psnr_db"] > result.history[0]["val/psnr_db"]


def test_student_wider_than_the_teacher_is_refused(tiny_setup):
    teacher, _, _ = tiny_setup
    wide = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=32, channels=(32, 32, 48))
    with pytest.raises(UserError, match=r"exceed the teacher.s \[32, 32, 32\]"):
        build_student(wide, teacher.model, "teacher")
