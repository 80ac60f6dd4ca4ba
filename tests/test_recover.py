"""Distillation recovery of a pruned generator (distill.recover): masks held bit-exactly, the error vs the teacher
drops, resume equals an uninterrupted run, exact windows, argument checks. Tiny models only."""
import copy
import math

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from edgestylegan.distill import recover as R
from edgestylegan.distill.recover import recover_by_distillation
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig, latents_from_seeds

CONFIG = GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 32))
SEEDS = range(300000, 300064)
FAST = dict(calibration_seeds=SEEDS, batch_size=4, seed=0, feature_samples=8, fit_columns=256, crop=8,
            progress=False)


def make_teacher() -> Generator:
    """A random MobileStyleGAN with tame modulations and images of std ~0.5."""
    torch.manual_seed(0)
    gen = Generator(CONFIG).eval()
    with torch.no_grad():
        for module in gen.synthesis.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(0.3 / math.sqrt(module.in_features))
        for module in gen.synthesis.modules():   # Some noise, so the cropped noise maps are exercised.
            if hasattr(module, "noise_strength"):
                module.noise_strength.fill_(0.05)
        gen.estimate_w_avg(256, 0)
        std = gen(latents_from_seeds(range(1000, 1064), CONFIG.style_dim)).std()
        head = gen.synthesis.blocks[-1].to_img.conv.conv
        head.weight.mul_(0.5 / std)
        head.bias.mul_(0.5 / std)
    return gen.requires_grad_(False)


def prune_all(gen: Generator, amount: float) -> Generator:
    """Per-tensor L1 pruning of every synthesis conv/linear weight, zeros stored as +0.0 (as compress.prune does)."""
    for module in gen.synthesis.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            tprune.L1Unstructured.apply(module, "weight", amount=amount)
            tprune.remove(module, "weight")
            with torch.no_grad():
                module.weight.masked_fill_(module.weight == 0, 0.0)
    return gen


@pytest.fixture(scope="module")
def teacher():
    return make_teacher()


@pytest.fixture(scope="module")
def pruned(teacher):
    return prune_all(copy.deepcopy(teacher), 0.8)


def image_mse(gen, teacher) -> float:
    z = latents_from_seeds(range(900000, 900032), CONFIG.style_dim)
    with torch.no_grad():
        return float((gen(z) - teacher(z)).square().mean())


def weight_zeros(gen) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() == 0 for n, m in gen.synthesis.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def assert_same_state(a: Generator, b: Generator):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("kw", [dict(steps=4, lr=1e-3), dict(steps=6, lr=1e-2, fit="none"),
                                dict(steps=3, lr=1e-3, inputs="recovered")])
def test_masks_survive_bit_exactly(teacher, pruned, kw):
    student = copy.deepcopy(pruned)
    before = weight_zeros(student)
    teacher_state = copy.deepcopy(teacher.state_dict())
    mapping = copy.deepcopy(student.mapping.state_dict())
    stats = recover_by_distillation(student, teacher, **{**FAST, **kw})
    assert stats["complete"] and stats["masks_intact"]
    changed = False
    for name, module in student.synthesis.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        pruned_entries = module.weight.detach()[before[name]]
        assert pruned_entries.numel() > 0
        # Bitwise +0.0: equal to zero and no sign bit.
        assert torch.equal(pruned_entries.view(torch.int32), torch.zeros_like(pruned_entries).view(torch.int32)), name
        changed |= not torch.equal(module.weight.detach(), dict(pruned.synthesis.named_modules())[name].weight)
    assert changed
    assert stats["masked_kept"] == sum(int((~m).sum()) for m in before.values())
    # Never trained: the mapping network, w_avg, the teacher; requires_grad as it was.
    assert all(torch.equal(v, mapping[k]) for k, v in student.mapping.state_dict().items())
    assert torch.equal(student.w_avg, pruned.w_avg)
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("kw", [dict(steps=0, lr=1e-3), dict(steps=20, lr=1e-2, fit="none"),
                                dict(steps=0, lr=1e-3, inputs="recovered")])
def test_error_vs_teacher_drops(teacher, pruned, kw):
    student = copy.deepcopy(pruned)
    recover_by_distillation(student, teacher, **{**FAST, "feature_samples": 32, **kw})
    before, after = image_mse(pruned, teacher), image_mse(student, teacher)
    assert after < 0.95 * before, (before, after)


# Mid-stage, at a stage boundary, mid-stage in a windowed stage; with recovered inputs the chain is recomputed.
@pytest.mark.parametrize("stop_after, inputs", [(3, "teacher"), (5, "teacher"), (7, "teacher"), (7, "recovered"),
                                                (10, "recovered")])
def test_resume_equals_uninterrupted(teacher, pruned, tmp_path, stop_after, inputs):
    kw = {**FAST, "steps": 5, "lr": 1e-3, "checkpoint_every": 2, "inputs": inputs}
    straight = copy.deepcopy(pruned)
    recover_by_distillation(straight, teacher, **kw)

    path = tmp_path / "recover.pt"
    first = copy.deepcopy(pruned)
    stats = recover_by_distillation(first, teacher, **kw, resume_path=path, stop_after=stop_after)
    assert not stats["complete"] and path.is_file()
    resumed = copy.deepcopy(pruned)   # A fresh process: the pruned model again, the checkpoint on disk.
    stats = recover_by_distillation(resumed, teacher, **kw, resume_path=path, live_dir=tmp_path / "live")
    assert stats["complete"] and stats["resumed_from"] == {"stage": stop_after // 5, "step": stop_after % 5}
    assert_same_state(resumed, straight)
    curve = (tmp_path / "live" / "plots" / "metrics" / "recover" / "loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + len(CONFIG.used_channels)   # Header + one record per stage (log_every > steps), the
    # records from before the interruption replayed from the checkpoint.

    # A finished run's checkpoint: a rerun changes nothing and says so.
    again = copy.deepcopy(pruned)
    stats = recover_by_distillation(again, teacher, **kw, resume_path=path)
    assert stats["complete"] and stats["resumed_from"]["stage"] == len(CONFIG.used_channels)
    assert_same_state(again, straight)


def test_foreign_or_broken_checkpoint_is_ignored(teacher, pruned, tmp_path):
    kw = {**FAST, "steps": 2, "lr": 1e-3}
    path = tmp_path / "recover.pt"
    recover_by_distillation(copy.deepcopy(pruned), teacher, **{**kw, "seed": 1}, resume_path=path)
    straight = copy.deepcopy(pruned)
    recover_by_distillation(straight, teacher, **kw)
    other = copy.deepcopy(pruned)   # Different seed: a different fingerprint, so it starts over.
    stats = recover_by_distillation(other, teacher, **kw, resume_path=path)
    assert stats["resumed_from"] == {"stage": 0, "step": 0}
    assert_same_state(other, straight)
    path.write_bytes(b"not a checkpoint")
    broken = copy.deepcopy(pruned)
    recover_by_distillation(broken, teacher, **kw, resume_path=path)
    assert_same_state(broken, straight)


def test_windows_are_exact(teacher):
    """Nested windows through the windowed stages reproduce the whole-map outputs on their valid pixels."""
    z = latents_from_seeds(range(300000, 300004), CONFIG.style_dim)
    with torch.no_grad():
        w = teacher.style(z)
        last = len(teacher.synthesis.blocks)
        full, x = [], None   # Whole maps in float32 (the cache itself is float16).
        for k in range(last + 1):
            x = R._stage_forward(teacher, k, x, w)
            full.append(x)
        pyr = R._Pyramid(teacher, 1, 4, 3, 4, seed=0)   # crop 4: stages 1 (8 px) and up are windowed.
        items = range(len(pyr.latent))
        x = pyr.first_inputs(R._stage_forward(teacher, 0, None, w))
        for k in range(1, last + 1):
            out = R._window_forward(teacher, pyr, k, x, w, items)
            side = 2 * pyr.size[k]
            ref = R._windows(full[k], pyr.latent, pyr.offsets(k, items), side, scale=2)
            valid = pyr.valid(k, items)
            assert float(((out - ref).abs() * valid).max()) < 1e-5
            assert float(valid.mean()) > 0.3
            if k < last:   # What the next stage reads lies inside this stage's exact pixels.
                rel = pyr.corner[k + 1] - 2 * pyr.corner[k]
                for i, (y, x0) in enumerate(rel.tolist()):
                    assert y >= 0 and x0 >= 0 and y + pyr.size[k + 1] <= side and x0 + pyr.size[k + 1] <= side
                    assert bool(valid[i, 0, y:y + pyr.size[k + 1], x0:x0 + pyr.size[k + 1]].all())
                x = pyr.next_inputs(k, out)
        # The last stage's windows hold at least crop x crop exact pixels.
        assert all(int(v.sum()) >= 16 for v in pyr.valid(last, items))


def test_masked_least_squares_rows():
    torch.manual_seed(0)
    x = torch.randn(40, 300, dtype=torch.float64)
    gram, cross = x @ x.T, x @ torch.randn(7, 300, dtype=torch.float64).T
    keep = torch.rand(7, 40) < 0.3
    keep[2] = False
    sol = R._solve_rows(gram, cross, keep, 0.01)
    for o in range(7):
        support = keep[o].nonzero().flatten()
        assert bool((sol[o][~keep[o]] == 0).all())
        if len(support):
            a = gram[support][:, support]
            a.diagonal().add_(0.01 * float(a.diagonal().mean()) + 1e-12)
            assert torch.allclose(sol[o, support], torch.linalg.solve(a, cross[support, o]), atol=1e-8)


@pytest.mark.parametrize("change, message", [
    (dict(steps=-1), "steps"), (dict(steps=1.5), "steps"), (dict(lr=0.0), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(batch_size=0), "batch_size"), (dict(batch_size=9), "batch_size"), (dict(calibration_seeds=[]), "empty"),
    (dict(calibration_seeds=[1, 1, 2]), "duplicates"), (dict(feature_samples=100), "feature_samples"),
    (dict(inputs="student"), "inputs"), (dict(fit="adam"), "fit"), (dict(crop=7), "crop"), (dict(crop=2), "crop"),
    (dict(damp=0), "damp"), (dict(seed="0"), "seed"), (dict(steps=0, fit="none"), "change nothing"),
    (dict(stop_after=0), "stop_after"), (dict(fit_windows=0), "fit_windows"),
])
def test_bad_arguments(teacher, pruned, change, message):
    kw = {**FAST, "steps": 1, "lr": 1e-3, **change}
    with pytest.raises(ValueError, match=message):
        recover_by_distillation(copy.deepcopy(pruned), teacher, **kw)


def test_bad_models(teacher, pruned):
    kw = {**FAST, "steps": 1, "lr": 1e-3}
    with pytest.raises(ValueError, match="same object"):
        recover_by_distillation(teacher, teacher, **kw)
    other = Generator(GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 16)))
    with pytest.raises(ValueError, match="architectures differ"):
        recover_by_distillation(other, teacher, **kw)
    with pytest.raises(ValueError, match="Generator"):
        recover_by_distillation(nn.Linear(2, 2), teacher, **kw)
