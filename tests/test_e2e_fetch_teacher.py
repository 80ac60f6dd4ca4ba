"""End to end: `dvc repro fetch_teacher` on a tiny params file in a fresh git repo."""
import json

import numpy as np
import pytest

from edgestylegan.io.ir_reader import NOISE_PORTS, random_face_data_dir, read_ir_constants
from helpers import dvc_project, run


@pytest.mark.slow
def test_dvc_repro_fetch_teacher(tmp_path, root, venv_env):
    params = dvc_project(tmp_path, root, venv_env,
                         {"teacher": dict(parity_seeds=[0], sample_seeds=[0, 1], w_avg_samples=64)})

    run(["dvc", "repro", "fetch_teacher"], tmp_path, venv_env)
    metrics = json.loads((tmp_path / "metrics/teacher.json").read_text())
    assert metrics["parity"]["max_abs"] <= params["teacher"]["parity_tolerance"]
    # Every synthesis parameter comes from the IR: its PyTorch-named constants, plus one strength per noise constant.
    consts = read_ir_constants(random_face_data_dir() / "SynthesisNetwork.xml")
    from_ir = sum(int(np.prod(a.shape)) for name, a in consts.items() if name.startswith("m.")) + len(NOISE_PORTS)
    assert metrics["params"]["synthesis"] == from_ir
    assert (tmp_path / "models/teacher.safetensors").stat().st_size > 30e6
    assert (tmp_path / "reports/teacher/samples.png").is_file()

    second = run(["dvc", "repro", "fetch_teacher"], tmp_path, venv_env)
    assert "didn't change, skipping" in second.stdout
