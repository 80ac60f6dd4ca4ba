"""Pruning: target sets, masks (L1 / random) by allocation, the earlier study's sparsity arithmetic, the prune stage."""
import copy
import csv

import pytest
import torch
import yaml

from edgestylegan.artifacts.prune import SCOPES, PruneRecord
from edgestylegan.compress.prune import earlier_study_sparsity, prune_generator, select_targets, sparsity_report
from edgestylegan.compress.sparse import load_sparse_generator
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.metrics.accounting import state_dicts_equal
from edgestylegan.models.macs import upstream_parameter_set
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig
from edgestylegan.paths import Paths
from edgestylegan.pipeline.prune import run_prune
from helpers import run_stage

STUDY = {0.2: 16.63, 0.4: 33.26, 0.6: 49.88, 0.8: 66.51}   # EdgeStyleGAN slides, % of all synthesis parameters


def test_target_sets(tiny_generator):
    every = select_targets(tiny_generator, "all")
    study = select_targets(tiny_generator, "edgestylegan")
    assert any(".depthwise." in n for n in every) and any(".pointwise." in n for n in every)
    assert not any(".depthwise." in n or ".pointwise." in n for n in study)
    assert set(study) < set(every)
    assert all(n.endswith(".modulation.weight") or n.endswith(".conv.conv.weight") for n in study)
    assert not any(n.startswith("mapping.") for n in every)


@pytest.mark.parametrize("targets", ["all", "edgestylegan"])
def test_global_l1_prunes_the_smallest_magnitudes_exactly(tiny_generator, targets):
    gen = copy.deepcopy(tiny_generator)
    before = {n: m.weight.detach().clone() for n, (m, _) in select_targets(gen, targets).items()}
    names = prune_generator(gen, 0.5, "l1", "global", targets)
    rep = sparsity_report(gen, names)
    total = sum(t.numel() for t in before.values())
    assert rep["targeted"]["zeros"] == round(0.5 * total)
    threshold = torch.cat([t.abs().flatten() for t in before.values()]).kthvalue(round(0.5 * total)).values
    for name, (module, _) in select_targets(gen, targets).items():
        w = module.weight.detach()
        assert torch.all(w[before[name].abs() > threshold] != 0)
        assert torch.all((w == 0) <= (before[name].abs() <= threshold))
        assert not torch.any(torch.signbit(w) & (w == 0))            # zeros are +0.0 (bitwise zero)
        assert not hasattr(module, "weight_orig")                     # masks made permanent
    biases = [m.bias for m in gen.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    assert all(torch.all(b != 0) for b in biases if b.abs().sum() > 0)


def test_uniform_allocation_and_random_method(tiny_generator):
    gen = copy.deepcopy(tiny_generator)
    names = prune_generator(gen, 0.25, "l1", "uniform", "all")
    for name, row in sparsity_report(gen, names)["layers"].items():
        assert row["zeros"] == round(0.25 * row["params"]), name
    a, b = copy.deepcopy(tiny_generator), copy.deepcopy(tiny_generator)
    prune_generator(a, 0.3, "random", "global", "all", seed=5)
    prune_generator(b, 0.3, "random", "global", "all", seed=5)
    assert state_dicts_equal(a.state_dict(), b.state_dict())
    c = copy.deepcopy(tiny_generator)
    prune_generator(c, 0.3, "random", "global", "all", seed=6)
    assert not state_dicts_equal(a.state_dict(), c.state_dict())


def test_upstream_parameter_set_matches_the_study_count():
    teacher_like = _trained_like(GeneratorConfig())           # the IR export: intermediate heads absent
    assert sum(p.numel() for p in teacher_like.synthesis.parameters()) == 7_306_395
    full = upstream_parameter_set(teacher_like)
    assert sum(p.numel() for p in full.synthesis.parameters()) == 8_852_079
    heads = sum(p.numel() for n, p in full.synthesis.named_parameters() if ".to_img" in n or n.startswith("to_img1"))
    kept = sum(p.numel() for n, p in teacher_like.synthesis.named_parameters() if "to_img" in n)
    assert heads - kept == 8_852_079 - 7_306_395 == 1_545_684
    assert sum(m.numel() for _, (mod, attr) in select_targets(full, "edgestylegan").items()
               for m in [getattr(mod, attr)]) == 7_359_744
    # Weights copied from the smaller model are untouched.
    assert torch.equal(full.synthesis.conv1.conv.conv.weight, teacher_like.synthesis.conv1.conv.conv.weight)


def _trained_like(config):
    """A random model without the exact zeros of a fresh init (zero biases / noise strengths), like a trained one:
    the study's sparsity counts every zero among all parameters."""
    torch.manual_seed(0)
    gen = Generator(config)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_((p == 0) * 0.01)
    return gen


def test_edgestylegan_recipe_reproduces_the_published_sparsities():
    gen = _trained_like(GeneratorConfig())
    for amount, published in STUDY.items():
        result = earlier_study_sparsity(gen, amount)
        upstream = result["upstream_parameter_set"]
        assert upstream["synthesis_params"] == 8_852_079 and upstream["targeted_params"] == 7_359_744
        assert abs(100 * upstream["sparsity_synthesis"] - published) <= 0.01, (amount, upstream)
        ours = result["this_model"]                          # our teacher's parameter set (heads absent)
        assert ours["synthesis_params"] == 7_306_395
        assert abs(ours["sparsity_synthesis"] - amount * ours["targeted_params"] / 7_306_395) < 1e-6


def _project(tmp_path, tiny_generator, **prune):
    save_generator(tiny_generator, tmp_path / "models" / "teacher.safetensors")
    params = {"prune": {"base": "teacher", "amounts": [0.2, 0.6], "amount": 0.0, "method": "l1",
                        "allocation": "global", "recovery": "none", "values": "float32", "targets": "all", "seed": 0,
                        **prune}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_prune_outputs_describe_the_stored_model(tmp_path, tiny_generator):
    project = _project(tmp_path, tiny_generator)
    returned = run_prune(0.6, project / "params.yaml", project)
    paths = Paths(project)
    record = PruneRecord.read(paths.prune_metrics(0.6))
    assert record == returned and set(record.sparsity) == set(SCOPES)
    assert "bytes" not in record.to_dict() and "params" not in record.to_dict()   # the account stage's quantities
    # The stored file is exactly the base pruned with the params, and the record's sparsities are the file's.
    expected = copy.deepcopy(tiny_generator)
    names = prune_generator(expected, 0.6, "l1", "global", "all", 0)
    stored = load_sparse_generator(paths.pruned_model(0.6))
    assert state_dicts_equal(stored.state_dict(), expected.state_dict())
    report = sparsity_report(stored, names)
    assert record.sparsity == {scope: report[scope]["sparsity"] for scope in SCOPES}
    assert record.sparsity["targeted"] == pytest.approx(0.6, abs=1e-4)
    rows = list(csv.DictReader(paths.prune_layers(0.6).read_text().splitlines()))
    assert [r["tensor"] for r in rows] == names
    assert sum(int(r["zeros"]) for r in rows) / sum(int(r["params"]) for r in rows) == \
        pytest.approx(record.sparsity["targeted"])
    assert set(record.earlier_study_recipe) == {"this_model", "upstream_parameter_set"}


def test_prune_stage_rejects_bad_amount_and_missing_base_without_output(root, tmp_path, monkeypatch, capsys,
                                                                       tiny_generator):
    project = _project(tmp_path, tiny_generator)
    monkeypatch.chdir(project)
    assert run_stage(root, "prune", "--amount", "0.4") == 2
    assert "--amount 0.4 is not one of prune.amounts" in capsys.readouterr().err
    (project / "models/teacher.safetensors").unlink()
    assert run_stage(root, "prune", "--amount", "0.6") == 2
    assert "run `dvc repro fetch_teacher`" in capsys.readouterr().err
    assert sorted(p.name for p in project.rglob("*")) == ["models", "params.yaml"]


def test_int8_levels_without_the_profile_name_both_fixes_and_write_nothing(root, tmp_path, monkeypatch, capsys,
                                                                             tiny_generator):
    project = _project(tmp_path, tiny_generator, values="int8")        # recovery none: only the levels need Hessians
    monkeypatch.chdir(project)
    assert run_stage(root, "prune", "--amount", "0.6") == 2
    err = capsys.readouterr().err
    assert "run `dvc repro prune_profile`" in err and "prune.int8_error_ratio > 0" in err
    assert not (project / "models/pruned").exists() and not (project / "metrics").exists()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prune"]["int8_error_ratio"] = 0.0
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage(root, "prune", "--amount", "0.6") == 0             # 8-bit codes need no profile


def test_prune_stage_writes_the_outputs(root, tmp_path, monkeypatch, tiny_generator):
    project = _project(tmp_path, tiny_generator)
    monkeypatch.chdir(project)
    assert run_stage(root, "prune", "--amount", "0.2") == 0
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        "metrics/prune/0.2.json", "models/pruned/0.2.safetensors", "models/teacher.safetensors", "params.yaml",
        "reports/prune/0.2_layers.csv"]


@pytest.mark.parametrize("bad, message", [
    ({"amount": 1.5}, "prune.amount = 1.5 is out of range"),
    ({"amounts": []}, "prune.amounts must have at least 1 entry"),
    ({"amounts": [0.2, 1.0]}, "prune.amounts[1] = 1.0 is out of range"),
    ({"amount": 0.5}, "neither 0 (dense) nor one of prune.amounts"),
    ({"method": "magnitude"}, "prune.method = 'magnitude' is not a known option"),
    ({"allocation": "even"}, "prune.allocation = 'even' is not a known option"),
    ({"recovery": "finetune"}, "prune.recovery = 'finetune' is not a known option"),
    ({"values": "int4"}, "prune.values = 'int4' is not a known option"),
    ({"dampening": 0.0}, "prune.dampening = 0.0 is out of range"),
    ({"method": "random", "allocation": "lamp"}, "with prune.method = random use allocation uniform or sensitivity"),
    ({"allocation": "sensitivity", "amounts": [0.2, 0.97]}, "exceed the profile's largest level"),
])
def test_prune_stage_rejects_bad_params_without_output(root, tmp_path, monkeypatch, capsys, tiny_generator, bad,
                                                      message):
    project = _project(tmp_path, tiny_generator, **bad)
    monkeypatch.chdir(project)
    assert run_stage(root, "prune", "--amount", "0.2") == 2
    assert message in capsys.readouterr().err
    assert not (project / "models/pruned").exists() and not (project / "metrics").exists()
