"""The recipe trade-off benchmark's recipe checks (the benchmark itself runs minutes per recipe: scripts/)."""
import pytest

from edgestylegan.config import read_yaml
from edgestylegan.errors import ParamsError, UserError
from edgestylegan.pipeline.quantize_tradeoff import DEFAULT_RECIPES, recipe_params


@pytest.fixture(scope="module")
def raw():
    return read_yaml("params.yaml")


def test_default_recipes_are_valid_and_applied(raw):
    for name, overrides in DEFAULT_RECIPES.items():
        recipe = recipe_params(raw, overrides, name)
        assert {k: recipe[k] for k in overrides} == overrides


def test_unknown_key_names_the_recipe(raw):
    with pytest.raises(UserError, match=r"recipe 'x'.*unknown quantize key\(s\) \['float_block'\]"):
        recipe_params(raw, {"float_block": 2}, "x")


def test_bad_value_is_a_params_error(raw):
    with pytest.raises(ParamsError, match="float_blocks"):
        recipe_params(raw, {"float_blocks": -1}, "x")


def test_script_exits_2_on_a_bad_recipe_file(tmp_path):
    import subprocess, sys
    bad = tmp_path / "r.yaml"
    bad.write_text("a: {float_ops: [Convolution]}\n")
    out = subprocess.run([sys.executable, "scripts/quantize_tradeoff.py", "--recipes", str(bad), "--root",
                          str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "float_ops" in out.stderr, out.stderr
    assert not (tmp_path / "reports").exists()


def test_missing_student_export_names_its_stage(tmp_path):
    from edgestylegan.pipeline.quantize_tradeoff import run_quantize_tradeoff

    with pytest.raises(UserError, match=r"quantized_student/float.onnx not found; run `dvc repro quantize_student`"):
        run_quantize_tradeoff({"a": {"float_head": True}}, "params.yaml", tmp_path, source="student")
    with pytest.raises(UserError, match="--source 'teacher'"):
        run_quantize_tradeoff(None, "params.yaml", tmp_path, source="teacher")
    assert not (tmp_path / "reports").exists()
