"""Accounting: analytic MACs, the earlier study's counting, latency helpers, and the account stage end to end."""
import json
import time

import pytest
import torch
import yaml

from edgestylegan.models.macs import analytic_macs
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.metrics import accounting as acc
from edgestylegan.metrics.latency import measure, summarize
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig
from helpers import run_stage


def test_analytic_macs_of_the_teacher():
    macs = analytic_macs(GeneratorConfig())
    layers = macs["layers"]
    assert layers["synthesis.conv1.conv.conv"] == 512 * 512 * 9 * 4 * 4
    assert layers["synthesis.blocks.6.conv2.conv.depthwise"] == 64 * 9 * 512 * 512          # groups = channels
    assert layers["synthesis.blocks.6.conv2.conv.pointwise"] == 64 * 64 * 512 * 512
    assert layers["synthesis.blocks.6.to_img.conv.conv"] == 64 * 12 * 512 * 512
    assert layers["mapping.layers.0"] == 512 * 512
    assert macs["total"] == macs["conv"] + macs["modulation_linear"] + macs["mapping"] == 7_286_743_040
    summary = acc.mac_summary(GeneratorConfig())
    # The paper's 15.09 "GMAC" is ~2 x the MACs of the net with all training heads: it counts multiply + add.
    assert summary["all_heads"]["gmac"] == pytest.approx(7.4728, abs=1e-4)
    assert 1.95 < summary["paper_over_ours_all_heads"] < 2.05


def test_earlier_study_counting_is_reproduced():
    torch.manual_seed(0)
    rep = acc.earlier_study_reproduction(Generator(GeneratorConfig()))
    assert rep["params_before"] == 8_852_079
    assert rep["params_listed_after_dynamic_int8_linear"] == 3_878_031        # "3.88M parameters"
    assert rep["linear_params_dropped_from_count"] == 4_974_048
    assert round(rep["mib_claimed_before"], 2) == 33.78 and round(rep["mib_claimed_after"], 2) == 14.81
    assert rep["params_really_stored_after"] == 8_852_079


def test_measure_interleaves_and_reports_medians():
    calls = []
    runners = {"a": lambda: calls.append("a") or time.sleep(0.002), "b": lambda: calls.append("b")}
    res = measure(runners, repeats=5, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 5
    assert res["a"]["repeats"] == 5 and res["a"]["median_ms"] >= 2.0 > res["b"]["median_ms"]
    assert summarize([0.001, 0.003, 0.002])["median_ms"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        measure(runners, repeats=0)


def _numbers_only(node, path="size"):
    if isinstance(node, dict):
        for k, v in node.items():
            _numbers_only(v, f"{path}.{k}")
    else:
        assert isinstance(node, (int, float)) and not isinstance(node, bool), path


def test_account_stage(root, tmp_path, monkeypatch, tiny_generator):
    save_generator(tiny_generator, tmp_path / "models" / "teacher.safetensors")
    params = {"prune": {"base": "teacher", "amounts": [0.5], "amount": 0.5, "method": "l1", "scope": "global",
                        "targets": "all", "seed": 0},
              "quantize": {"engine": "onnxruntime", "backend": "x86", "calibration_samples": 8, "calibration_seed": 1,
                           "calibration": "mse", "truncation": 1.0, "fidelity_seeds": [0], "min_psnr": 0.0,
                           "keep_float": [], "float_weights": "int8"},
              "account": {"runtimes": ["torch_fp32", "torch_int8", "onnxruntime_fp32", "onnxruntime_int8",
                                       "openvino_fp32", "openvino_int8"],
                          "latency_repeats": 3, "latency_warmup": 1, "threads": 1, "pruned_latency": True,
                          "student": False}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert run_stage(root, "prune", "--amount", "0.5") == 0
    assert run_stage(root, "quantize") == 0
    assert run_stage(root, "account") == 0
    size = json.loads((tmp_path / "metrics/size.json").read_text())
    _numbers_only(size)
    teacher_bytes = (tmp_path / "models/teacher.safetensors").stat().st_size
    assert size["teacher"]["bytes"]["dense_fp32"] == teacher_bytes
    pruned = size["pruned"]["0.5"]
    assert pruned["bytes"]["sparse"] == (tmp_path / "models/pruned/0.5.safetensors").stat().st_size
    assert pruned["bytes"]["sparse"] < pruned["bytes"]["dense_fp32"]
    assert 0.3 < pruned["params"]["synthesis"]["sparsity"] < 0.5
    assert set(size["teacher"]["latency_ms"]) == {"torch_fp32", "onnxruntime_fp32", "openvino_fp32"}
    assert set(size["int8"]["latency_ms"]) == {"torch_int8", "onnxruntime_int8", "openvino_int8"}
    assert set(size["int8"]["latency_over_fp32_same_runtime"]) == {"torch", "onnxruntime", "openvino"}
    assert size["int8"]["bytes"]["file"]["bytes"] == (tmp_path / "models/quantized/int8.onnx").stat().st_size
    assert size["int8"]["macs"]["gmac"] == size["teacher"]["macs"]["gmac"]
    assert "torch_fp32" in pruned["latency_ms"]
    assert size["int8"]["params"]["synthesis"]["sparsity"] == pytest.approx(pruned["params"]["synthesis"]["sparsity"])
    assert size["earlier_study_reproduction"]["params_listed_after_dynamic_int8_linear"] < \
        size["earlier_study_reproduction"]["params_before"]
