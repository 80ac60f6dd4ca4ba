"""Report generation from small fake metrics files (the report is a pure function of them)."""
import csv
import importlib.util
import json

import pytest
import torch
import yaml

from edgestylegan.errors import UserError
from edgestylegan.imaging import grid, save_png
from edgestylegan.report.build import build_report
from edgestylegan.report.collect import Variant, amount_id, variants_from_params

EVAL = dict(seed=100, reference_seed=1000, num_samples=64, truncation=1.0, resolution=32, batch_size=4,
            feature_batch_size=8, runtime="torch", parity_tolerance=2e-3, feature_spaces=["enl0"],
            inception_weights="", reference="teacher", kid_subsets=10, kid_subset_size=32, precision_recall=True,
            strip_columns=4)
REPORT = dict(variants=["teacher", "pruned", "int8", "student"], grid_columns=3)
AMOUNTS = [0.2, 0.6]


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def fake_project(root, amounts=AMOUNTS, with_size=True):
    variants = variants_from_params(REPORT["variants"], amounts)
    floor = {"fd_enl0": 40.0, "kid_enl0": {"mean": 0.0005, "std": 0.001}, "precision_enl0": 0.8, "recall_enl0": 0.8}
    spaces = {"enl0": {"label": "EfficientNet-Lite0 ImageNet, 1280-d", "dim": 1280, "fd_key": "fd_enl0",
                       "kid_key": "kid_enl0"}}
    for i, v in enumerate(variants):
        is_teacher = v.kind == "teacher"
        res = 16 if v.kind == "student" else 32
        paired = ({"ssim": 1.0, "mse": 0.0, "identical_images": 64} if is_teacher else
                  {"ssim": 0.9 - 0.1 * i, "mse": 10.0 * i, "identical_images": 0, "psnr_db": 35.0 - 3 * i})
        _write(root / "metrics/eval" / f"{v.id}.json",
               {"n": 64, "resolution": res, "native_resolution": res if v.kind == "student" else 1024,
                "fd_enl0": 40.0 + 10 * i, "kid_enl0": {"mean": 0.0005 + 0.002 * i, "std": 0.001},
                "precision_enl0": 0.8, "recall_enl0": 0.8 - 0.05 * i, "noise_floor": floor, "paired": paired})
        _write(root / "reports/eval" / f"{v.id}.json",
               {"variant": v.id, "resolution": res, "feature_spaces": spaces, "kid": "10 subsets of 32",
                "inception_weights": "not found (test)", "generation": {"runtime": "openvino-cpu-f32",
                                                                         "images_per_s": 3.0, "parity_max_abs": 1e-5},
                "feature_images_per_s": 60.0})
        strip = torch.full((4, 3, res, res), 40 * i, dtype=torch.uint8)
        save_png(grid(strip, columns=4), root / "reports/eval" / f"{v.id}.png")
    for a in amounts:
        tag = amount_id(a)
        _write(root / "metrics/prune" / f"{tag}.json",
               {"amount": a, "sparsity": {"targeted": a, "synthesis": 0.9 * a, "generator": 0.7 * a},
                "params": {"generator": {"params": 9_407_643, "nonzero": int(9_407_643 * (1 - 0.7 * a))}},
                "bytes": {"dense_fp32": 40_444_468, "sparse": int(40_444_468 * (1 - 0.6 * a))},
                "earlier_study_recipe": {"upstream_parameter_set": {"sparsity_synthesis": 0.8314 * a}}})
        (root / "reports/prune").mkdir(parents=True, exist_ok=True)
        with open(root / "reports/prune" / f"{tag}_layers.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["tensor", "params", "nonzero", "zeros", "sparsity"])
            for j in range(5):
                w.writerow([f"synthesis.blocks.{j}.conv1.conv.pointwise.weight", 100, 50, 50, a * (0.5 + 0.2 * j)])
    if with_size:   # The account stage's layout (stages/account.py).
        gen = {"generator": {"params": 9_407_643, "nonzero": 9_000_000}}
        size = {"teacher": {"params": gen, "bytes": {"file": {"bytes": 40_444_564}, "dense_fp32": 40_444_564},
                            "macs": {"gmac": 15.0}, "latency_ms": {"torch_fp32": 900.0, "openvino_fp32": 300.0}},
                "macs": {"gmac": 15.0},
                "pruned": {amount_id(a): {"params": gen, "macs": {"gmac": 15.0},
                                          "bytes": {"sparse": int(40e6 * (1 - 0.6 * a)), "dense_fp32": 40_444_468}}
                           for a in amounts},
                "int8": {"default_engine_is_onnxruntime": 1, "params": gen,
                         "bytes": {"int8_onnx": {"bytes": 11_000_000}, "int8_torch": {"bytes": 12_000_000}},
                         "latency_ms": {"onnxruntime_int8": 500.0, "openvino_int8": 250.0}},
                "student": {"params": gen, "bytes": {"file": {"bytes": 30_000_000}}, "macs": {"gmac": 2.0},
                            "latency_ms": {"torch_fp32": 90.0}}}
        _write(root / "metrics/size.json", size)
    return variants


def test_variants_follow_params_not_folders():
    ids = [v.id for v in variants_from_params(["teacher", "pruned", "int8"], [0.2, 0.4])]
    assert ids == ["teacher", "pruned-0.2", "pruned-0.4", "int8"]
    assert amount_id(0.6) == "0.6" and Variant("int8", "int8").label.startswith("int8")


def test_report_from_fake_metrics(tmp_path):
    fake_project(tmp_path)
    fake_project(tmp_path / "stale", amounts=[0.2, 0.4, 0.6, 0.8])   # Never read: not under root's metrics/.
    _write(tmp_path / "metrics/eval/pruned-0.4.json", {"n": 1})          # Stale file of a shrunk sweep: ignored.
    out = tmp_path / "reports"
    captions = build_report(EVAL, REPORT, AMOUNTS, tmp_path, out, {"prune_targets": "all", "calibration": 32})
    assert all(ok for ok, _ in captions.values()), captions
    md = (out / "report.md").read_text()
    assert "teacher (noise floor)" in md and "noise floor" in md
    assert "N = 64 is below the feature dimension 1280" in md
    assert "not FID" in md and "FID (Inception-v3)**: not computed" in md
    assert "## Earlier study vs ours" in md and "16.63" in md and "3,878,031" in md
    assert "∞ (identical)" in md and "pruned-0.4" not in md
    for name in captions:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert f"figures/{name}.png" in md
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["teacher", "pruned-0.2", "pruned-0.6", "int8", "student"]
    assert float(rows[1]["fd_enl0"]) == 50.0 and rows[0]["psnr_db"] == ""
    assert float(rows[3]["bytes"]) == 11_000_000 and float(rows[3]["latency_ms"]) == 250.0   # int8 from account.
    assert float(rows[1]["bytes"]) == int(40e6 * 0.88) and float(rows[0]["macs"]) == 15e9
    with open(out / "plots" / "sweep.csv") as f:
        assert [r["variant"] for r in csv.DictReader(f)] == ["teacher", "pruned-0.2", "pruned-0.6"]


def test_missing_optional_inputs_are_stated_not_faked(tmp_path):
    fake_project(tmp_path, with_size=False)
    out = tmp_path / "reports"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "latency_by_runtime.png").write_bytes(b"stale")
    captions = build_report(EVAL, REPORT, AMOUNTS, tmp_path, out)
    assert not captions["latency_by_runtime"][0] and "metrics/size.json" in captions["latency_by_runtime"][1]
    assert not (out / "figures" / "latency_by_runtime.png").exists()   # No stale figure left behind.
    md = (out / "report.md").read_text()
    assert "Not drawn: metrics/size.json has no latency" in md and "## Missing inputs" in md


def test_missing_variant_metrics_name_the_stage(tmp_path):
    fake_project(tmp_path)
    (tmp_path / "metrics/eval/int8.json").unlink()
    with pytest.raises(UserError, match="evaluate for int8"):
        build_report(EVAL, REPORT, AMOUNTS, tmp_path, tmp_path / "reports")


def test_report_stage_cli(tmp_path, root, monkeypatch):
    fake_project(tmp_path)
    report = {**REPORT, "variants": ["teacher", "int8"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval": EVAL, "report": report}))
    spec = importlib.util.spec_from_file_location("stage_report", root / "stages" / "report.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "SCHEMA", {k: v for k, v in stage.SCHEMA.items() if k not in ("prune", "quantize")})
    stage.main([])
    assert "int8" in (tmp_path / "reports/report.md").read_text()
