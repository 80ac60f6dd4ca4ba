"""End to end: the whole `dvc repro` on a tiny params file in a fresh git repo, then a cached no-op rerun.

The teacher is a 64-px generator this test makes (`teacher.source: file`); the real teacher's fetch and conversion
run end to end in tests/test_e2e_fetch_teacher.py, and here they would make every stage work at 1024² (~8 min).

While it runs, every stage records the params keys it really reads (EDGESTYLEGAN_TRACE_PARAMS); each must be
declared in that stage's `params:` in dvc.yaml, or a params change would not rerun the stage.
"""
import csv
import json
import os

import pytest
from dvc.repo import Repo

from edgestylegan.artifacts.evaluation import EvalRecord
from edgestylegan.artifacts.size import SizeRecord
from edgestylegan.config import SCHEMA, TRACE_ENV
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.models.mobilestylegan import GeneratorConfig
from edgestylegan.paths import Paths
from helpers import dvc_project, run, unit_variance_generator

TEACHER = GeneratorConfig(style_dim=64, mapping_layers=2, resolution=64, channels=(32, 32, 32, 32, 16))
TINY = {
    "teacher": {"source": "file", "parity_seeds": [0], "sample_seeds": [0, 1], "w_avg_samples": 64},
    "student": {"resolution": 32, "channels": [32, 32, 32, 16]},
    "distill": {"pool_size": 8, "val_size": 4, "steps": 4, "batch_size": 2, "sample_every": 2, "sample_count": 2,
                "checkpoint_every": 2, "head_init_samples": 4, "crop": 0},
    # torch: the OpenVINO evaluation path is covered by tests/test_evaluate.py and test_features.py.
    "eval": {"runtime": "torch", "num_samples": 8, "paired_samples": 8, "kid_subsets": 5, "kid_subset_size": 4,
             "strip_columns": 4, "precision_recall": False},
    "report": {"grid_columns": 3},
    "prune": {"amounts": [0.5], "amount": 0.5, "calibration_images": 2, "calibration_positions": 4096,
              "calibration_styles": 256},
    "quantize": {"calibration_samples": 8, "validation_samples": 1, "fidelity_samples": 1, "min_psnr": 0.0,
                 "float_blocks": 0},
    "account": {"runtimes": ["torch_fp32", "onnxruntime_int8", "openvino_ir_fp32"], "latency_repeats": 1,
                "latency_warmup": 0, "pruned_latency": False},
}
VARIANTS = ("teacher", "pruned-0.5", "int8", "student", "student-int8")


def _declared(stage) -> set[str]:
    keys = set()
    for dep in stage.deps:
        if type(dep).__name__ != "ParamsDependency":
            continue
        for entry in dep.params or [f"{s}.{k}" for s in SCHEMA for k in SCHEMA[s]]:   # `params.yaml:` = all
            keys |= {f"{entry}.{k}" for k in SCHEMA[entry]} if entry in SCHEMA else {entry}
    return keys


def undeclared_reads(project, trace_dir) -> list[str]:
    repo = Repo(str(project))
    try:
        by_cmd = {stage.cmd: stage for stage in repo.index.stages}
    finally:
        repo.close()
    problems, traced = [], set()
    for path in sorted(trace_dir.glob("*.json")):
        trace = json.loads(path.read_text())
        cmd = "python " + " ".join(trace["argv"])
        stage = by_cmd.get(cmd)
        assert stage is not None, f"traced a command that is no stage: {cmd}"
        traced.add(cmd)
        missing = sorted(set(trace["reads"]) - _declared(stage))
        if missing:
            problems.append(f"{stage.addressing} reads {missing} but dvc.yaml does not declare them")
    assert traced == set(by_cmd), f"stages that never ran: {sorted(set(by_cmd) - traced)}"
    return problems


@pytest.mark.slow
def test_dvc_repro_whole_pipeline_on_tiny_params(tmp_path, root, venv_env):
    project, trace = tmp_path / "project", tmp_path / "trace"
    project.mkdir()
    teacher_file = tmp_path / "tiny_teacher.safetensors"
    save_generator(unit_variance_generator(TEACHER), teacher_file)
    tiny = {**TINY, "teacher": {**TINY["teacher"], "path": str(teacher_file)}}
    dvc_project(project, root, venv_env, tiny, commit=True)   # dvclive (distill) needs a commit
    run(["dvc", "repro"], project, {**venv_env, TRACE_ENV: str(trace)})
    assert undeclared_reads(project, trace) == []

    # The report's table is the stages' records: each row's quality and size cells are the evaluated and the
    # accounted numbers of that variant, and the bytes are those of the file on disk.
    paths = Paths(project)
    with open(project / "reports/metrics.csv", newline="") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(VARIANTS)
    for variant in VARIANTS:
        scores = EvalRecord.read(paths.eval_metrics(variant)).scores
        size = SizeRecord.read(paths.size_metrics(variant))
        assert float(rows[variant]["fd_enl0"]) == pytest.approx(scores["fd_enl0"], rel=1e-12)
        assert int(float(rows[variant]["bytes"])) == size.bytes["file"]["bytes"]
    int8_file = paths.int8_model("openvino")
    assert SizeRecord.read(paths.size_metrics("int8")).bytes["file"]["bytes"] == \
        os.stat(int8_file).st_size + os.stat(int8_file.with_suffix(".bin")).st_size
    assert SizeRecord.read(paths.size_metrics("teacher")).bytes["file"]["bytes"] == \
        os.stat(paths.teacher_model).st_size
    assert EvalRecord.read(paths.eval_metrics("teacher")).scores["fd_enl0"] == \
        EvalRecord.read(paths.eval_metrics("teacher")).noise_floor["fd_enl0"]
    assert list((project / "reports/figures").glob("*.png"))

    again = run(["dvc", "repro"], project, venv_env)
    assert "Data and pipelines are up to date" in again.stdout
