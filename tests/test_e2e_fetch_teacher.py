"""End to end: `dvc repro fetch_teacher` on a tiny params file in a fresh git repo."""
import json
import shutil
import subprocess

import pytest
import yaml


def run(cmd, cwd, env):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_dvc_repro_fetch_teacher(tmp_path, root, venv_env):
    for item in ("dvc.yaml", "params.yaml"):
        shutil.copy(root / item, tmp_path / item)
    for folder in ("stages", "src"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["teacher"].update(parity_seeds=[0], sample_seeds=[0, 1], w_avg_samples=64)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], tmp_path, venv_env)
    run(["dvc", "init", "-q"], tmp_path, venv_env)

    run(["dvc", "repro", "fetch_teacher"], tmp_path, venv_env)
    metrics = json.loads((tmp_path / "metrics/teacher.json").read_text())
    assert metrics["parity"]["max_abs"] <= params["teacher"]["parity_tolerance"]
    assert metrics["params"]["synthesis"] == 7_306_395
    assert (tmp_path / "models/teacher.safetensors").stat().st_size > 30e6
    assert (tmp_path / "reports/teacher/samples.png").is_file()

    second = run(["dvc", "repro", "fetch_teacher"], tmp_path, venv_env)
    assert "didn't change, skipping" in second.stdout
