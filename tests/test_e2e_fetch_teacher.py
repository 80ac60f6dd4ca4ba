"""End to end: `dvc repro fetch_teacher` on a tiny params file in a fresh git repo."""
import json

import pytest

from helpers import dvc_project, run


@pytest.mark.slow
def test_dvc_repro_fetch_teacher(tmp_path, root, venv_env):
    params = dvc_project(tmp_path, root, venv_env,
                         {"teacher": dict(parity_seeds=[0], sample_seeds=[0, 1], w_avg_samples=64)})

    run(["dvc", "repro", "fetch_teacher"], tmp_path, venv_env)
    metrics = json.loads((tmp_path / "metrics/teacher.json").read_text())
    assert metrics["parity"]["max_abs"] <= params["teacher"]["parity_tolerance"]
    assert metrics["params"]["synthesis"] == 7_306_395
    assert (tmp_path / "models/teacher.safetensors").stat().st_size > 30e6
    assert (tmp_path / "reports/teacher/samples.png").is_file()

    second = run(["dvc", "repro", "fetch_teacher"], tmp_path, venv_env)
    assert "didn't change, skipping" in second.stdout
