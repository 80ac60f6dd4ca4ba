"""End to end: the whole `dvc repro` on a tiny params file in a fresh git repo, then a cached no-op rerun."""
import json

import pytest

from helpers import dvc_project, run

TINY = {
    "teacher": {"parity_seeds": [0], "sample_seeds": [0, 1], "w_avg_samples": 64},
    "distill": {"pool_size": 8, "val_size": 4, "steps": 4, "batch_size": 2, "sample_every": 2, "sample_count": 2,
                "checkpoint_every": 2, "head_init_samples": 4},
    "eval": {"num_samples": 8, "kid_subsets": 5, "kid_subset_size": 4, "strip_columns": 4, "precision_recall": False},
    "report": {"grid_columns": 3},
    "prune": {"amounts": [0.5], "amount": 0.5},
    "quantize": {"calibration_samples": 8, "fidelity_seeds": [0], "min_psnr": 0.0},
    "account": {"runtimes": ["torch_fp32", "onnxruntime_int8", "openvino_ir_fp32"], "latency_repeats": 1,
                "latency_warmup": 0, "pruned_latency": False},
}


@pytest.mark.slow
def test_dvc_repro_whole_pipeline_on_tiny_params(tmp_path, root, venv_env):
    dvc_project(tmp_path, root, venv_env, TINY, commit=True)   # dvclive (distill) needs a commit
    run(["dvc", "repro"], tmp_path, venv_env)

    report = (tmp_path / "reports/report.md").read_text()
    for variant in ("teacher", "pruned-0.5", "int8", "student", "student-int8"):
        assert variant in report
        assert json.loads((tmp_path / f"metrics/eval/{variant}.json").read_text())
    assert "fd_enl0" in report and "N = 8" in report.replace("N=8", "N = 8")
    size = json.loads((tmp_path / "metrics/size.json").read_text())
    assert {"teacher", "pruned", "int8", "student", "student-int8"} <= set(size)
    assert size["student-int8"]["latency_ms"]["onnxruntime_int8"] > 0
    assert size["int8"]["bytes"] and size["pruned"]
    assert list((tmp_path / "reports/figures").glob("*.png"))

    again = run(["dvc", "repro"], tmp_path, venv_env)
    assert "Data and pipelines are up to date" in again.stdout
