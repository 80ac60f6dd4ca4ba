"""OBS / SparseGPT reconstruction, budget allocations, the sensitivity profile and the prune stages built on them."""
import copy
import csv

import pytest
import torch
import yaml
from safetensors.torch import load_file

from edgestylegan.artifacts.prune import PruneRecord, SensitivityProfile
from edgestylegan.compress.allocation import ALLOCATIONS, LEVELS, allocate, lamp_scores
from edgestylegan.compress.importance import output_importance
from edgestylegan.compress.prune import select_targets
from edgestylegan.compress.reconstruct import (layer_hessians, obs_prune, obs_prune_levels, relative_output_error,
                                               reconstruct_generator, reconstruct_with_hessians, refit_to_dense,
                                               sensitivity_profile, weight_levels_for_error)
from edgestylegan.compress.sparse import WEIGHT_LEVELS, load_sparse_generator
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.models.mobilestylegan import latents_from_seeds
from edgestylegan.paths import Paths
from helpers import run_stage


def _layer(rows=24, cols=40, samples=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, cols, generator=g) + torch.randn(samples, 1, generator=g)   # correlated inputs
    return torch.randn(rows, cols, generator=g), (x.T @ x / samples).double()


def test_obs_removes_exactly_the_count_and_beats_plain_masking():
    weight, hessian = _layer()
    zeros = 600
    pruned = obs_prune(weight, hessian, zeros)
    assert int((pruned == 0).sum()) == zeros and not torch.any(torch.signbit(pruned) & (pruned == 0))
    masked = weight.clone()
    masked.view(-1)[weight.abs().flatten().argsort()[:zeros]] = 0
    assert relative_output_error(weight, pruned, hessian) < 0.8 * relative_output_error(weight, masked, hessian)


def test_row_weights_spare_the_rows_that_matter_downstream():
    weight, hessian = _layer(rows=8, cols=64, seed=4)
    importance = torch.tensor([100.0] * 4 + [1.0] * 4)
    plain = obs_prune(weight, hessian, 256)
    weighted = obs_prune(weight, hessian, 256, row_weights=importance)
    assert int((weighted == 0).sum()) == 256

    def image_error(pruned):
        diff = (weight - pruned).double()
        return float(torch.einsum("ri,ij,rj->r", diff, hessian, diff) @ importance.double())
    assert image_error(weighted) < 0.8 * image_error(plain)
    assert int((weighted[:4] != 0).sum()) > int((plain[:4] != 0).sum())


def test_output_importance_is_zero_exactly_where_the_image_cannot_see(tiny_generator):
    gen = copy.deepcopy(tiny_generator)
    dwconv = gen.synthesis.blocks[0].conv1.conv
    with torch.no_grad():
        dwconv.pointwise.weight[:, 3] = 0            # channel 3 of the depthwise output reaches nothing
    owners = {n: m for n, (m, _) in select_targets(gen, "all").items()}
    names = list(owners)
    styles = gen.style(latents_from_seeds(range(4), gen.style_dim))
    importance = output_importance(gen, owners, styles, gen.resolution // 2, progress=False)
    state = gen.state_dict()
    assert {n: tuple(v.shape) for n, v in importance.items()} == {n: (state[n].shape[0],) for n in names}
    others = torch.arange(dwconv.depthwise.weight.shape[0]) != 3
    for name in ("synthesis.blocks.0.conv1.conv.modulation.weight", "synthesis.blocks.0.conv1.conv.depthwise.weight"):
        assert importance[name][3] == 0 and bool((importance[name][others] > 0).all()), name
    assert all(p.requires_grad for p in gen.parameters())                   # left as it was
    with pytest.raises(ValueError, match="must divide"):
        output_importance(gen, owners, styles, gen.resolution * 2, progress=False)


def test_fixed_mask_is_kept_and_refit_lowers_the_error():
    weight, hessian = _layer(seed=1)
    keep = torch.rand(weight.shape, generator=torch.Generator().manual_seed(2)) > 0.5
    refit = obs_prune(weight, hessian, 0, fixed_mask=keep)
    assert torch.equal(refit != 0, keep)
    assert relative_output_error(weight, refit, hessian) < relative_output_error(weight, weight * keep, hessian)


def test_per_row_hessians_and_levels_agree_with_single_runs():
    weight = torch.randn(6, 9)
    x = torch.randn(6, 30, 9)
    hessian = torch.einsum("rni,rnj->rij", x, x).double() / 30
    counts = [0, 20, 40]
    stacked = obs_prune_levels(weight, hessian, counts)
    for level, count in enumerate(counts):
        assert torch.equal(stacked[level], obs_prune(weight, hessian, count))
        assert int((stacked[level] == 0).sum()) == count


def test_refit_to_dense_is_the_least_squares_fit_to_the_dense_output():
    g = torch.Generator().manual_seed(3)
    weight, x_dense = torch.randn(5, 8, generator=g), torch.randn(400, 8, generator=g).double()
    x = x_dense + 0.3 * torch.randn(400, 8, generator=g).double()         # the pruned model's inputs
    refit = refit_to_dense(weight, x.T @ x / 400, x_dense.T @ x / 400, dampening=0.0)
    expected = torch.linalg.lstsq(x, x_dense @ weight.double().T).solution.T
    assert torch.allclose(refit.double(), expected, atol=1e-5)
    rows = torch.randn(5, 400, 8, generator=g).double()                   # per-row inputs (depthwise)
    noisy = rows + 0.3 * torch.randn(5, 400, 8, generator=g).double()
    per_row = refit_to_dense(weight, torch.einsum("rni,rnj->rij", noisy, noisy) / 400,
                             torch.einsum("rni,rnj->rij", rows, noisy) / 400, dampening=0.0)
    for r in range(5):
        fit = torch.linalg.lstsq(noisy[r], rows[r] @ weight[r].double()).solution
        assert torch.allclose(per_row[r].double(), fit, atol=1e-5)


def test_sequential_reconstruction_undoes_the_error_of_earlier_layers(tiny_generator):
    """A later layer with nothing to prune is re-fit towards the dense model's output of that layer: on its calibration
    images (all 64 at every pixel: positions = 256 = the 16-px block's pixels) it moves closer to it."""
    dense = copy.deepcopy(tiny_generator).eval()
    early, late = "synthesis.blocks.0.conv1.conv.pointwise", "synthesis.blocks.1.conv1.conv.pointwise"
    with torch.no_grad():
        styles = dense.style(latents_from_seeds(range(300000, 300512), dense.style_dim))
    rebuilt = copy.deepcopy(dense)
    errors = reconstruct_generator(rebuilt, {f"{early}.weight": dense.get_submodule(early).weight.numel() * 3 // 4,
                                             f"{late}.weight": 0}, styles[:448], styles[:64], positions=256,
                                   progress=False)
    unchanged = copy.deepcopy(rebuilt)
    unchanged.get_submodule(late).weight.data.copy_(dense.get_submodule(late).weight)

    def late_output(gen):
        out = []
        handle = gen.get_submodule(late).register_forward_hook(lambda _m, _a, y: out.append(y))
        with torch.no_grad():
            gen.synthesis(styles[:64])
        handle.remove()
        return out[0]
    target = late_output(dense)
    error = {name: float((late_output(g) - target).square().sum()) for name, g in (("refit", rebuilt),
                                                                                    ("unchanged", unchanged))}
    assert error["refit"] < 0.97 * error["unchanged"], error
    assert 0 < errors[f"{late}.weight"] < 1


@pytest.mark.parametrize("allocation", ALLOCATIONS)
@pytest.mark.parametrize("amount", [0.3, 0.77])
def test_every_allocation_hits_the_budget_exactly(tiny_generator, allocation, amount):
    weights = {n: m.weight for n, (m, _) in select_targets(tiny_generator, "all").items()}
    profile = {n: [lvl * (1 + i) for lvl in LEVELS] for i, n in enumerate(weights)}
    zeros = allocate(allocation, weights, amount, profile)
    total = sum(w.numel() for w in weights.values())
    assert sum(zeros.values()) == round(amount * total)
    assert all(0 <= zeros[n] <= w.numel() for n, w in weights.items())


def test_sensitivity_allocation_spares_the_sensitive_layers(tiny_generator):
    weights = {n: m.weight for n, (m, _) in select_targets(tiny_generator, "all").items()}
    names = list(weights)
    fragile = names[0]
    profile = {n: [lvl ** 2 * (100.0 if n == fragile else 1.0) for lvl in LEVELS] for n in names}
    zeros = allocate("sensitivity", weights, 0.5, profile)
    assert zeros[fragile] / weights[fragile].numel() < 0.5 < max(zeros[n] / weights[n].numel() for n in names)


def test_lamp_scores_follow_magnitude_within_a_tensor():
    w = torch.tensor([0.5, -2.0, 1.0, 0.1])
    scores = lamp_scores(w)
    assert torch.equal(scores.argsort(), w.abs().argsort())
    assert scores.max() == 1.0                                   # the largest weight's score is 1


@pytest.mark.parametrize("layer", ["blocks.1.conv1.conv.depthwise", "blocks.1.conv1.conv.pointwise",
                                   "blocks.0.conv2.conv.modulation", "conv1.conv.conv"])
@pytest.mark.parametrize("sequential", [True, False])
def test_reconstruction_lowers_the_layer_output_error_vs_plain_masking(tiny_generator, layer, sequential):
    dense = copy.deepcopy(tiny_generator).eval()
    name = f"synthesis.{layer}.weight"
    with torch.no_grad():
        styles = dense.style(latents_from_seeds(range(300000, 300512), dense.style_dim))
    module = dense.get_submodule(f"synthesis.{layer}")
    captured = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    with torch.no_grad():
        dense.synthesis(styles[-64:])                          # fresh styles: none of them calibrated
    handle.remove()
    weight = module.weight.detach().clone()
    zeros = weight.numel() // 2
    rebuilt = copy.deepcopy(dense)
    if sequential:
        reconstruct_generator(rebuilt, {name: zeros}, styles[:448], styles[:4], positions=65536, progress=False)
    else:
        hessians = layer_hessians(dense, [name], styles[:448], styles[:4], positions=65536, progress=False)
        reconstruct_with_hessians(rebuilt, {name: zeros}, hessians, progress=False)
    refit = rebuilt.get_submodule(f"synthesis.{layer}").weight.detach()
    masked = weight.clone()
    masked.view(-1)[weight.abs().flatten().argsort()[:zeros]] = 0
    assert int((refit == 0).sum()) == zeros

    def output_error(w):
        x = captured[0]
        run = (lambda v: torch.nn.functional.linear(x, v)) if isinstance(module, torch.nn.Linear) else \
            (lambda v: torch.nn.functional.conv2d(x, v, padding=module.padding, groups=module.groups))
        return float((run(w) - run(weight)).square().sum() / run(weight).square().sum())
    assert output_error(refit) < 0.9 * output_error(masked)


def test_sensitivity_profile_grows_with_sparsity_and_leaves_the_model(tiny_generator):
    gen = copy.deepcopy(tiny_generator).eval()
    before = copy.deepcopy(gen.state_dict())
    with torch.no_grad():
        styles = gen.style(latents_from_seeds(range(300000, 300256), gen.style_dim))
    names = list(select_targets(gen, "all"))
    hessians = layer_hessians(gen, names, styles, styles[:2], positions=128, progress=False)
    profile = sensitivity_profile({n: gen.state_dict()[n] for n in names}, hessians, LEVELS, progress=False)
    assert set(profile) == set(names) == set(hessians)
    for curve in profile.values():
        assert curve[0] == pytest.approx(0.0, abs=1e-9) and curve[-1] > curve[1]
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())


def _project(tmp_path, generator, **prune):
    save_generator(generator, tmp_path / "models" / "teacher.safetensors")
    params = {"prune": {"base": "teacher", "amounts": [0.6], "amount": 0.0, "calibration_styles": 256,
                        "calibration_images": 2, "calibration_positions": 1024, **prune}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_profile_then_prune_stages_with_defaults(root, tmp_path, monkeypatch, tiny_generator):
    project = _project(tmp_path, tiny_generator)
    monkeypatch.chdir(project)
    assert run_stage(root, "prune", "--amount", "0.6") == 2                  # no profile yet: says which stage
    assert not (project / "models/pruned").exists()
    assert run_stage(root, "prune_profile") == 0
    paths = Paths(project)
    profile = SensitivityProfile.read(paths.prune_profile)
    assert paths.prune_profile_figure.stat().st_size > 0 and profile.levels == list(LEVELS)
    assert paths.prune_hessians.is_file()
    assert set(load_file(str(paths.prune_importance))) == set(select_targets(tiny_generator, "all"))
    assert run_stage(root, "prune", "--amount", "0.6") == 0
    record = PruneRecord.read(paths.prune_metrics(0.6))
    assert (record.allocation, record.recovery, record.values) == ("sensitivity", "reconstruct", "int8")
    stored = load_sparse_generator(paths.pruned_model(0.6))
    names = list(select_targets(stored, "all"))
    zeros = sum(int((stored.state_dict()[n] == 0).sum()) for n in names)
    total = sum(stored.state_dict()[n].numel() for n in names)
    assert zeros / total == pytest.approx(record.sparsity["targeted"])
    assert record.sparsity["targeted"] >= 0.6 - 1e-9        # int8 rounding may zero a few more, never fewer
    rows = list(csv.DictReader(paths.prune_layers(0.6).read_text().splitlines()))
    assert all(float(r["relative_error"]) >= 0 for r in rows)
    assert record.mean_layer_error is not None and record.seconds["reconstruct"] > 0
    # int8 levels per tensor (prune.int8_error_ratio): the CSV's choice is what the file holds, the record sums it
    levels = {r["tensor"]: int(r["int8_levels"]) for r in rows}
    assert set(levels.values()) <= set(WEIGHT_LEVELS) and min(levels.values()) < 127
    for name, count in levels.items():
        assert max(len(torch.unique(row)) for row in stored.state_dict()[name].flatten(1)) <= 2 * count + 1, name
    assert sum(record.int8_levels.values()) == total - zeros
    assert record.int8_levels == {str(k): sum(int(r["nonzero"]) for r in rows if int(r["int8_levels"]) == k)
                                  for k in sorted(set(levels.values()))}


def test_sequential_prune_stage(root, tmp_path, monkeypatch, tiny_generator):
    project = _project(tmp_path, tiny_generator, sequential=True, allocation="lamp", values="float32")
    monkeypatch.chdir(project)
    assert run_stage(root, "prune", "--amount", "0.6") == 2               # the output importance is the profile's
    assert run_stage(root, "prune_profile") == 0
    assert run_stage(root, "prune", "--amount", "0.6") == 0
    record = PruneRecord.read(Paths(project).prune_metrics(0.6))
    assert record.sparsity["targeted"] == pytest.approx(0.6, abs=1e-4) and record.values == "float32"


def test_distill_recovery_stage_passes_its_params_and_keeps_the_masks(root, tmp_path, monkeypatch, tiny_generator):
    project = _project(tmp_path, tiny_generator, sequential=True, allocation="lamp", values="float32",
                       recovery="distill", distill_steps=3, distill_samples=8, distill_batch_size=2,
                       importance_samples=0)                               # lamp, unweighted OBS: no profile needed
    monkeypatch.chdir(project)
    assert run_stage(root, "prune", "--amount", "0.6") == 0
    record = PruneRecord.read(Paths(project).prune_metrics(0.6))
    settings = {k: record.distill[k] for k in ("inputs", "fit", "feature_samples", "steps", "batch_size", "lr")}
    assert settings == {"inputs": "recovered", "fit": "none", "feature_samples": 8, "steps": 3, "batch_size": 2,
                        "lr": 3e-4}
    assert record.distill["complete"] and record.distill["masks_intact"]
    assert record.sparsity["targeted"] == pytest.approx(0.6, abs=1e-4) and record.seconds["distill"] > 0


def test_importance_sizes_the_int8_levels_by_the_image_error():
    weight, hessian = _layer(rows=8, cols=64, seed=5)
    pruned = obs_prune(weight, hessian, 256)
    unweighted = weight_levels_for_error({"w": pruned}, {"w": weight}, {"w": hessian}, 0.05)
    # every row's weight scaled alike: the same choice
    flat = weight_levels_for_error({"w": pruned}, {"w": weight}, {"w": hessian}, 0.05, {"w": torch.full((8,), 7.0)})
    assert flat == unweighted
    # the pruning error sits in rows that do not matter, the rounding error in every row: more levels needed
    importance = torch.ones(8)
    importance[(weight - pruned).square().sum(dim=1).argsort()[:4]] = 1e4
    weighted = weight_levels_for_error({"w": pruned}, {"w": weight}, {"w": hessian}, 0.05, {"w": importance})
    assert weighted["w"] > unweighted["w"]
