"""BlazeStyleGAN-style students (student.arch = blaze) and width-scaled students (student.width): architecture,
channel selection, block-wise fit, export, checkpoint, ONNX, MACs, params. Tiny models on the CPU."""
import subprocess
import sys

import pytest
import torch
import yaml

from edgestylegan.config import ParamsError, defaults, validate
from edgestylegan.distill.losses import pyramid_loss
from edgestylegan.distill.students import (build_student, channel_selection, export_student, fit_heads_lstsq,
                                           fit_narrowed_stages, fitted_stages, scaled_channels, stage_parameter_names,
                                           tame_new_modulations)
from edgestylegan.distill.targets import PoolBatches, PoolSpec, build_pool
from edgestylegan.distill.teachers import Teacher
from edgestylegan.distill.trainer import train
from edgestylegan.io.checkpoint import load_generator, save_generator
from edgestylegan.models.macs import analytic_macs, upstream_parameter_set
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig, UpToRGB, latents_from_seeds
from test_distill import STYLE_DIM, _config, make_teacher

TINY = (16, 16, 16, 16, 16, 16, 16, 16)


def _blaze(resolution, all_heads=False, channels=TINY, seed=0) -> Generator:
    """A random blaze generator with images of a sane range (modulations scaled as a new student's are)."""
    torch.manual_seed(seed)
    gen = Generator(GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=1, resolution=resolution, channels=channels,
                                    all_heads=all_heads, arch="blaze")).eval()
    tame_new_modulations(gen, set())
    return gen


@pytest.mark.parametrize("resolution", [256, 512, 1024])
def test_blaze_blocks_stop_at_a_quarter_of_the_output_and_every_head_upsamples_by_four(resolution):
    gen = _blaze(resolution, all_heads=True)
    assert len(gen.synthesis.blocks) == resolution.bit_length() - 5      # features 8 .. resolution / 4
    feats = []
    hook = gen.synthesis.blocks[-1].conv2.register_forward_hook(lambda m, a, out: feats.append(out))
    with torch.no_grad():
        img, raw = gen.synthesis(gen.style(latents_from_seeds([0], STYLE_DIM)), return_freqs=True)
    hook.remove()
    assert img.shape == (1, 3, resolution, resolution) and feats[0].shape[-1] == resolution // 4
    assert [r.shape[-1] for r in raw] == [2 ** k for k in range(2, resolution.bit_length() - 2)]
    assert all(r.shape[1] == 48 and isinstance(h, UpToRGB) for r, h in
               zip(raw, [gen.synthesis.to_img1, *(b.to_img for b in gen.synthesis.blocks)]))
    assert torch.equal(img, UpToRGB.to_rgb(raw[-1]))
    assert [UpToRGB.to_rgb(r).shape[-1] for r in raw] == [2 ** k for k in range(4, resolution.bit_length())]


def test_a_256_px_blaze_student_is_the_teachers_trunk_to_64_px_plus_a_new_head():
    config = GeneratorConfig(resolution=256, arch="blaze")
    student, pretrained = build_student(config, Generator(GeneratorConfig()).eval(), "teacher")
    params = {n for n, _ in student.synthesis.named_parameters()}
    assert {f"synthesis.{n}" for n in params if ".to_img." not in n} == pretrained
    assert config.used_channels == (512,) * 5 and fitted_stages(config, GeneratorConfig()) == []


def test_export_drops_training_heads_and_keeps_the_last_heads_output(tmp_path):
    gen = _blaze(64, all_heads=True)
    exported = export_student(gen)
    assert exported.synthesis.to_img1 is None and all(b.to_img is None for b in exported.synthesis.blocks[:-1])
    assert not any(".to_img." in k and not k.startswith("synthesis.blocks.1.") for k in exported.state_dict()
                   if k.startswith("synthesis.blocks."))
    z = latents_from_seeds([0, 1], STYLE_DIM)
    with torch.no_grad():
        _, raw = gen.synthesis(gen.style(z), return_freqs=True)
        assert torch.equal(exported(z), UpToRGB.to_rgb(raw[-1]))
    save_generator(exported, tmp_path / "s.safetensors", {"kind": "test"})
    loaded = load_generator(tmp_path / "s.safetensors")
    assert loaded.config == exported.config and loaded.config.arch == "blaze"
    with torch.no_grad():
        assert torch.equal(loaded(z), exported(z))


def test_onnx_export_of_a_blaze_model_matches_torch(tmp_path):
    from edgestylegan.runtimes.onnx import OnnxRuntimeGenerator, export_onnx, openvino_generator

    gen = export_student(_blaze(64, all_heads=True))
    path = export_onnx(gen, tmp_path / "blaze.onnx")
    z = latents_from_seeds([0, 1, 2], STYLE_DIM)
    with torch.no_grad():
        ref = gen(z, 0.7)
    ort = OnnxRuntimeGenerator(path)
    assert ort.config.arch == "blaze" and ort.resolution == 64
    assert 0.01 < ref.abs().mean() < 10
    assert (ort(z, 0.7) - ref).abs().max() < 1e-4
    assert (openvino_generator(gen)(z, 0.7) - ref).abs().max() < 1e-4


def test_analytic_macs_count_the_uptorgb_head():
    config = GeneratorConfig(resolution=256, arch="blaze")
    layers = analytic_macs(config)["layers"]
    assert layers["synthesis.blocks.3.to_img.conv.conv"] == 48 * 512 * 64 * 64
    assert layers["synthesis.blocks.3.to_img.conv.modulation"] == 512 * 512
    assert sum(1 for k in layers if ".to_img." in k) == 2        # the one inference head: conv + modulation
    full = upstream_parameter_set(Generator(config).eval())      # the account stage's training-head count
    assert full.synthesis.to_img1 is not None and isinstance(full.synthesis.blocks[0].to_img, UpToRGB)


#----------------------------------------------------------------------------
# Width-scaled students: channel selection from the teacher, chained stage to stage.


def test_scaled_channels():
    assert scaled_channels([512, 512, 256, 128, 30], 1.0) == (512, 512, 256, 128, 30)
    assert scaled_channels([512, 512, 256, 128], 0.75) == (384, 384, 192, 96)
    assert scaled_channels([512, 256, 6], 0.5) == (256, 128, 4)


@pytest.fixture(scope="module")
def teacher():
    return make_teacher()


@pytest.mark.parametrize("arch", ["blaze", "mobilestylegan"])
def test_narrow_student_holds_exactly_the_selected_teacher_channels(teacher, arch):
    config = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=64 if arch == "blaze" else 32,
                             channels=scaled_channels(teacher.config.channels, 0.5), arch=arch)
    student, pretrained = build_student(config, teacher, "teacher")
    keeps = channel_selection(config, teacher)
    t, s = teacher.synthesis.state_dict(), student.synthesis.state_dict()
    const, out = keeps["const"], keeps["-1"]
    assert len(const) == len(out) == 16
    assert torch.equal(s["const"], t["const"][:, const])
    assert torch.equal(s["conv1.conv.conv.weight"], t["conv1.conv.conv.weight"][out][:, const])
    assert torch.equal(s["conv1.conv.modulation.weight"], t["conv1.conv.modulation.weight"][const])
    for i in range(config.num_blocks):
        b, inp, mid, out = f"blocks.{i}", keeps[str(i - 1)], keeps[f"{i}.1"], keeps[str(i)]
        groups = inp[:len(inp) // 4]
        assert torch.equal(inp[len(groups):], (32 // 4 + 3 * groups[:, None] + torch.arange(3)).flatten())
        assert torch.equal(s[f"{b}.up.modulation.weight"], t[f"{b}.up.modulation.weight"][inp])
        assert torch.equal(s[f"{b}.conv1.conv.depthwise.weight"], t[f"{b}.conv1.conv.depthwise.weight"][groups])
        assert torch.equal(s[f"{b}.conv1.conv.pointwise.weight"],
                           t[f"{b}.conv1.conv.pointwise.weight"][mid][:, groups])
        assert torch.equal(s[f"{b}.conv2.conv.pointwise.weight"], t[f"{b}.conv2.conv.pointwise.weight"][out][:, mid])
        assert torch.equal(s[f"{b}.conv2.conv.pointwise.bias"], t[f"{b}.conv2.conv.pointwise.bias"][out])
    assert not pretrained                                             # every stage is narrowed: all derived
    # Whole Haar groups: the student's IDWT of the selected channels is the teacher's IDWT at the selected groups.
    w = teacher.style(latents_from_seeds([0, 1], STYLE_DIM))
    with torch.no_grad():
        x = teacher.synthesis.conv1(teacher.synthesis.const.expand(2, -1, -1, -1), w, "fixed")
        sel = keeps["-1"]
        assert torch.allclose(student.synthesis.blocks[0].up(x[:, sel], w),
                              teacher.synthesis.blocks[0].up(x, w)[:, sel[:len(sel) // 4]], atol=1e-6)


def test_student_at_the_teachers_widths_is_not_narrowed(teacher):
    config = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=64, channels=teacher.config.channels,
                             arch="blaze")
    student, pretrained = build_student(config, teacher, "teacher")
    assert fitted_stages(config, teacher.config) == []
    assert {n for n, _ in student.synthesis.named_parameters() if ".to_img." not in n} == \
        {n.removeprefix("synthesis.") for n in pretrained}
    w = teacher.style(latents_from_seeds([0], STYLE_DIM))
    feats = {}
    for name, gen in (("t", teacher), ("s", student)):
        hook = gen.synthesis.blocks[1].register_forward_hook(lambda m, a, o, n=name: feats.__setitem__(n, o[0]))
        with torch.no_grad():
            gen.synthesis(w)
        hook.remove()
    assert torch.equal(feats["t"], feats["s"])


@pytest.fixture(scope="module")
def pool64(teacher, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blaze")
    spec = PoolSpec(train_size=48, train_seed=1, val_size=8, val_seed=2, truncation=1.0, resolution=64,
                    teacher_sha256="t" * 64)
    return build_pool(Teacher("mobilestylegan", teacher, "t" * 64, "test", {}), spec, folder / "pool.safetensors",
                      folder / "cache", "torch", progress=False)


def test_block_wise_fit_then_suffix_training_of_a_narrow_blaze_student(teacher, pool64, tmp_path):
    config = GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=64,
                             channels=scaled_channels(teacher.config.channels, 0.5), arch="blaze")
    student, pretrained = build_student(config, teacher, "teacher")
    stages = fitted_stages(config, teacher.config)
    assert stages == [-1, 0]                  # conv1 and block 0; the last block trains through the head
    fitted = stage_parameter_names(student, stages)
    before = {k: v.clone() for k, v in student.state_dict().items()}

    def fit():
        return fit_narrowed_stages(student, teacher, pool64.train_z[:32], 1.0, steps=60, lr=3e-3, batch_size=8,
                                   progress=False)

    result = train(student, pretrained | fitted, PoolBatches(pool64, 0), (pool64.val_z, pool64.val_images),
                   _config(steps=40, lr=3e-3, lr_pretrained=0.0, head_init="lstsq", sample_every=40),
                   tmp_path / "r.pt", "fp", progress=False, fit_trunk=fit)
    assert set(result.trunk_fit) == {"-1", "0"}
    for k, v in result.trunk_fit.items():
        assert v["rel_error"] < 0.8 * v["rel_error_init"], (k, v)
    assert result.head_fit and "synthesis.blocks.1.to_img" in result.head_fit
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert "synthesis.blocks.0.conv2.conv.pointwise.weight" in changed                     # block-wise fit
    assert "synthesis.blocks.1.conv2.conv.pointwise.weight" in changed                     # suffix
    assert not any(k.startswith("mapping.") for k in changed)
    assert result.history[-1]["val/psnr_db"] > result.history[0]["val/psnr_db"]


def test_uptorgb_lstsq_head_fit_recovers_a_linear_head_and_rgb_pyramid_loss(teacher):
    student, _ = build_student(GeneratorConfig(style_dim=STYLE_DIM, mapping_layers=2, resolution=64,
                                               channels=teacher.config.channels, arch="blaze"), teacher, "teacher")
    head = student.synthesis.blocks[-1].to_img.conv
    with torch.no_grad():                     # A head that is linear in its input: the fit's model class.
        head.modulation.weight.zero_()
        head.modulation.bias.fill_(1.0)
        w = student.style(latents_from_seeds(range(24), STYLE_DIM))
        images = student.synthesis(w)
        true_weight = head.conv.weight.clone()
        head.conv.weight.normal_()
        residual = fit_heads_lstsq(student, w, images, {"synthesis.blocks.1.to_img"}, ridge=1e-8)
        assert residual["synthesis.blocks.1.to_img"] < 1e-8
        assert torch.allclose(head.conv.weight, true_weight, atol=1e-3)
        assert (student.synthesis(w) - images).abs().max() < 1e-3
    target = torch.rand(2, 3, 64, 64) * 2 - 1
    raw = [UpToRGB.from_rgb(torch.nn.functional.avg_pool2d(target, 4)), UpToRGB.from_rgb(target)]
    assert float(pyramid_loss(raw, target, UpToRGB)["l1"]) < 1e-6
    assert float(pyramid_loss([r + 0.1 for r in raw], target, UpToRGB)["l1"]) == pytest.approx(0.2, abs=1e-5)


#----------------------------------------------------------------------------
# Params.


def test_student_params_are_checked():
    ok = validate({"student": {"arch": "blaze", "resolution": 256, "channels": [512] * 5, "width": 0.5}}, ["student"])
    assert ok["student"]["width"] == 0.5
    with pytest.raises(ParamsError, match=r"student.width = 0.0 is out of range \(0"):
        validate({"student": {"width": 0}}, ["student"])
    with pytest.raises(ParamsError, match="student.width = 1.5 is out of range"):
        validate({"student": {"width": 1.5}}, ["student"])
    with pytest.raises(ParamsError, match="student.arch = 'blazestylegan' is not a known option"):
        validate({"student": {"arch": "blazestylegan"}}, ["student"])
    with pytest.raises(ParamsError, match="student.channels needs 5 entries .* student.arch = blaze"):
        validate({"student": {"arch": "blaze", "resolution": 256, "channels": [512] * 4}}, ["student"])
    with pytest.raises(ParamsError, match="student.arch = blaze needs student.resolution >= 16"):
        validate({"student": {"arch": "blaze", "resolution": 8}}, ["student"])
    with pytest.raises(ParamsError, match="distill.block_steps"):
        validate({"distill": {"block_steps": -1}}, ["distill"])


@pytest.mark.parametrize("student,message", [
    ({"width": 0}, "student.width"),
    ({"arch": "blazer"}, "student.arch"),
    ({"arch": "blaze", "resolution": 256, "channels": [512, 512]}, "student.channels"),
    ({"arch": "blaze", "resolution": 32, "channels": [64, 32]}, "exceed the teacher's [32, 32]"),
])
def test_distill_stage_exits_2_on_bad_student_params_and_writes_nothing(root, tmp_path, teacher, student, message):
    save_generator(teacher, tmp_path / "models" / "teacher.safetensors", {"source": "test"})
    params = defaults()
    params["student"].update({"resolution": 32, "channels": [32, 32, 32, 32], **student})
    params["distill"].update({"pool_size": 4, "val_size": 2, "steps": 2, "teacher_runtime": "torch",
                              "device": "cpu"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage = lambda name: subprocess.run([sys.executable, str(root / "stages" / name), "--params",  # noqa: E731
                                         str(tmp_path / "params.yaml"), "--root", str(tmp_path)],
                                        cwd=tmp_path, capture_output=True, text=True)
    if "exceed" in message:   # Valid params: the pool renders; the student cannot be built from this teacher.
        assert stage("distill_pool.py").returncode == 0
    result = stage("distill.py")
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {"params.yaml", "models/teacher.safetensors", "data/distill/pool.safetensors"}, written
