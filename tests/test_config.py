"""The one params schema: params.yaml holds its defaults, and every kind of bad value is refused naming the key.

The bad-input cases are generated from the schema itself (every key: wrong type, out of range, unknown option,
bad list entry), checked in-process against the validator; a few go through real stage processes and `dvc repro`.
"""
import copy
import subprocess
import sys

import pytest
import yaml

from edgestylegan.config import SCHEMA, defaults, validate, validate_file
from edgestylegan.errors import ParamsError
from helpers import dvc_project


def _bad_values(field):
    """(label, value) pairs that `field` must reject."""
    wrong_type = {"int": "seven", "float": "seven", "bool": "yes", "str": 12, "choice": 12, "list": "a,b"}
    cases = [("wrong type", wrong_type[field.kind])]
    if field.kind in ("int", "float"):
        if field.low is not None:
            cases.append(("below range", field.low if field.open_low else field.low - 1))
        if field.high is not None:
            cases.append(("above range", field.high if field.open_high else field.high + 1))
        cases.append(("not finite", float("nan")))
        if field.kind == "int":
            cases.append(("not an integer", (field.low or 0) + 1.5))
    if field.kind == "choice":
        cases.append(("unknown option", "no-such-option"))
    if field.kind == "list":
        cases.append(("bad entry", [*(field.default or [])[:1], {"a": 1}]))
    return cases


CASES = [(f"{section}.{name}", label, value)
         for section, fields in SCHEMA.items() for name, field in fields.items()
         for label, value in _bad_values(field)]


def test_params_yaml_holds_exactly_the_schema_defaults(root):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    assert raw == defaults()
    assert validate_file(root / "params.yaml") == defaults()


def test_every_key_has_a_default():
    for section, fields in SCHEMA.items():
        for name, field in fields.items():
            assert field.default is not None, f"{section}.{name} has no default"


@pytest.mark.parametrize("key,label,value", CASES, ids=[f"{k}-{lbl}" for k, lbl, _ in CASES])
def test_bad_value_is_refused_naming_the_key(key, label, value):
    section, name = key.split(".")
    params = defaults()
    params[section][name] = value
    with pytest.raises(ParamsError) as error:
        validate(params, [section])
    assert key in str(error.value), f"{label}: message does not name {key}: {error.value}"


@pytest.mark.parametrize("section", list(SCHEMA))
def test_unknown_key_in_every_section_is_refused(section):
    params = defaults()
    params[section]["no_such_key"] = 1
    with pytest.raises(ParamsError, match=f"{section}.no_such_key"):
        validate(params, [section])


def test_duplicate_sweep_entries_and_unknown_sections_are_refused(tmp_path):
    params = defaults()
    params["prune"]["amounts"] = [0.2, 0.2]
    with pytest.raises(ParamsError, match="prune.amounts has duplicates"):
        validate(params, ["prune"])
    params = defaults()
    params["prunning"] = {"amount": 0.5}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="unknown section.*prunning"):
        validate_file(path)


@pytest.mark.parametrize("edit,message", [
    ({"distill_samples": 8192}, "prune.distill_samples = 8192 exceeds prune.calibration_styles"),
    ({"distill_samples": 2, "distill_batch_size": 4}, "prune.distill_batch_size = 4 exceeds prune.distill_samples"),
])
def test_distillation_recovery_latents_are_checked_against_each_other(edit, message):
    params = defaults()
    params["prune"].update(edit)
    validate(params, ["prune"])   # only prune.recovery = distill reads them
    params["prune"]["recovery"] = "distill"
    with pytest.raises(ParamsError, match=message):
        validate(params, ["prune"])


@pytest.mark.parametrize("edit,message", [
    ({"importance_samples": 8192}, "prune.importance_samples = 8192 exceeds prune.calibration_styles"),
    ({"importance_samples": -1}, "prune.importance_samples"),
    ({"importance_resolution": 200}, "prune.importance_resolution = 200 is not a power of two"),
])
def test_importance_params_are_checked(edit, message):
    params = defaults()
    params["prune"].update(edit)
    with pytest.raises(ParamsError, match=message):
        validate(params, ["prune"])


@pytest.mark.parametrize("edit,message", [
    ({"range_quantile": 0.2}, r"quantize.range_quantile = 0.2 is out of range"),
    ({"range_quantile": 0.0}, r"quantize.range_quantile = 0.0 is out of range"),
    ({"range_estimator": "minmax", "range_quantile": 1e-2}, "applies only to quantize.range_estimator quantile or mean_quantile"),
    ({"minmax_tensor_blocks": 4, "accuracy_control": True}, "would change ranges after quantize.accuracy_control"),
    ({"minmax_tensor_blocks": -1}, r"quantize.minmax_tensor_blocks = -1 is out of range"),
    ({"student_float_last_blocks": -1}, "quantize.student_float_last_blocks"),
    ({"cle_alpha": -0.5}, r"quantize.cle_alpha = -0.5 must be in \[0, 1\] \(or -1"),
    ({"cle_alpha": 1.5}, r"quantize.cle_alpha = 1.5 is out of range"),
])
def test_bad_quantize_range_and_float_block_params_are_rejected(edit, message):
    params = defaults()
    params["quantize"].update(edit)
    with pytest.raises(ParamsError, match=message):
        validate(params, ["quantize"])
    params["quantize"].update(range_estimator="minmax", range_quantile=defaults()["quantize"]["range_quantile"],
                              student_float_last_blocks=0, cle_alpha=-1, minmax_tensor_blocks=0)
    validate(params, ["quantize"])   # another estimator with the default quantile is fine


def _stage(root, tmp_path, script, params, *args):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, str(root / "stages" / script), "--params", str(path), *args],
                          cwd=tmp_path, capture_output=True, text=True)


@pytest.mark.parametrize("edit,key", [
    (lambda p: p["prune"].update(amout=0.6), "prune.amout"),
    (lambda p: p.update(prunning={"amount": 0.6}), "prunning"),
    (lambda p: p["eval"].update(num_samples=-3), "eval.num_samples"),
    (lambda p: p["quantize"].update(engine="tensorrt"), "quantize.engine"),
])
def test_check_params_stage_exits_2_naming_the_key_and_writes_nothing(root, tmp_path, edit, key):
    params = copy.deepcopy(defaults())
    edit(params)
    result = _stage(root, tmp_path, "check_params.py", params, "--root", str(tmp_path))
    assert result.returncode == 2
    assert key in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_dvc_repro_stops_on_a_typo_before_any_stage_runs(tmp_path, root, venv_env):
    dvc_project(tmp_path, root, venv_env, {})
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["prune"]["amout"] = 0.6
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run(["dvc", "repro"], cwd=tmp_path, env=venv_env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "prune.amout" in result.stdout + result.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "dvc.lock").exists()
