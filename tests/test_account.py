"""Accounting: analytic MACs against torch's FLOP counter, the earlier study's counting, latency helpers, and the
account stage per variant on tiny models (every expectation derived independently of the code under test)."""
import dataclasses
import gzip
import json
import math
import time

import pytest
import torch
import yaml
from safetensors import safe_open
from torch.utils.flop_counter import FlopCounterMode

from edgestylegan.artifacts.size import SizeRecord
from edgestylegan.errors import UserError
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.metrics import accounting as acc
from edgestylegan.metrics.latency import cpu_info, measure, summarize
from edgestylegan.models.macs import analytic_macs
from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig
from edgestylegan.paths import Paths
from edgestylegan.pipeline.account import run_account
from edgestylegan.pipeline.loaders import load_model
from edgestylegan.pipeline.prune import run_prune
from edgestylegan.pipeline.quantize import run_quantize
from helpers import run_stage

# The earlier study's published figures (its slides): 8,852,079 -> 3,878,031 params, 33.78 -> 14.81 MB.
EARLIER = {"before": 8_852_079, "after": 3_878_031, "mb_before": 33.78, "mb_after": 14.81}
STUDENT = GeneratorConfig(style_dim=32, mapping_layers=2, resolution=16, channels=(32, 16))
FP32 = ["torch_fp32", "onnxruntime_fp32", "openvino_fp32"]
INT8 = ["onnxruntime_int8", "openvino_int8"]


def _torch_flops(config: GeneratorConfig) -> int:
    """torch's own count of the conv + matmul FLOPs of one image (2 per multiply-accumulate), shapes only."""
    with torch.device("meta"):
        gen = Generator(config).eval()
        z = torch.randn(1, config.style_dim)
    with FlopCounterMode(display=False) as counter:
        gen(z)
    return counter.get_total_flops()


def test_analytic_macs_of_the_teacher():
    macs = analytic_macs(GeneratorConfig())
    layers = macs["layers"]
    assert layers["synthesis.conv1.conv.conv"] == 512 * 512 * 9 * 4 * 4
    assert layers["synthesis.blocks.6.conv2.conv.depthwise"] == 64 * 9 * 512 * 512          # groups = channels
    assert layers["synthesis.blocks.6.conv2.conv.pointwise"] == 64 * 64 * 512 * 512
    assert layers["synthesis.blocks.6.to_img.conv.conv"] == 64 * 12 * 512 * 512
    assert layers["mapping.layers.0"] == 512 * 512
    assert macs["total"] == macs["conv"] + macs["modulation_linear"] + macs["mapping"]
    assert 2 * macs["total"] == _torch_flops(GeneratorConfig())
    summary = acc.mac_summary(GeneratorConfig())
    all_heads = dataclasses.replace(GeneratorConfig(), all_heads=True)
    assert summary["gmac"] * 2e9 == pytest.approx(_torch_flops(GeneratorConfig()), rel=1e-12)
    assert summary["all_heads"]["gmac"] * 2e9 == pytest.approx(_torch_flops(all_heads), rel=1e-12)
    assert not any(k.startswith("paper") for k in summary)   # The paper's constant lives in report/earlier.py.


def test_earlier_study_counting_is_reproduced():
    torch.manual_seed(0)
    rep = acc.earlier_study_reproduction(Generator(GeneratorConfig()))
    assert rep["params_before"] == EARLIER["before"]
    assert rep["params_listed_after_dynamic_int8_linear"] == EARLIER["after"]
    assert rep["linear_params_dropped_from_count"] == EARLIER["before"] - EARLIER["after"]
    assert round(rep["mib_claimed_before"], 2) == EARLIER["mb_before"]
    assert round(rep["mib_claimed_after"], 2) == EARLIER["mb_after"]
    assert "params_really_stored_after" not in rep


def test_measure_interleaves_and_reports_medians():
    calls = []
    runners = {"a": lambda: calls.append("a") or time.sleep(0.002), "b": lambda: calls.append("b")}
    res = measure(runners, repeats=5, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 5
    assert res["a"]["repeats"] == 5 and res["a"]["median_ms"] >= 2.0 > res["b"]["median_ms"]
    assert summarize([0.001, 0.003, 0.002])["median_ms"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        measure(runners, repeats=0)


def test_cpu_info_reads_the_first_processor(tmp_path):
    block = "processor\t: {i}\nmodel name\t: Test CPU {i}\nflags\t\t: fpu sse2 avx2 avx512f amx_tile amx_int8{x}\n"
    path = tmp_path / "cpuinfo"
    path.write_text(block.format(i=0, x="") + "\n" + block.format(i=1, x=" avx512_vnni"))
    assert cpu_info(path) == {"model_name": "Test CPU 0",
                              "isa": {"avx2": True, "avx512f": True, "amx_tile": True, "amx_int8": True}}
    assert cpu_info(tmp_path / "absent")["isa"] == {}


#---------------------------------------------------------------------------- the stage, per variant


def _numbers_only(node, path="size"):
    if isinstance(node, dict):
        for k, v in node.items():
            if path.endswith(".cpu") and k == "model_name":
                assert isinstance(v, str)
                continue
            _numbers_only(v, f"{path}.{k}")
    else:
        assert node is None or isinstance(node, (int, float)), path


def _params(root, overrides: dict) -> dict:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory, root, request):
    """A tiny teacher and student, pruned at 0.5 (the operating point) and quantized by the real stages."""
    tmp = tmp_path_factory.mktemp("account")
    tiny = GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 16))
    for name, config in (("teacher", tiny), ("student", STUDENT)):
        torch.manual_seed(0)
        gen = Generator(config).eval()
        gen.estimate_w_avg(64, 0)
        save_generator(gen, Paths(tmp).base_model(name), {"test": name})
    params = _params(root, {"prune": {"amounts": [0.5], "amount": 0.5, "allocation": "global", "recovery": "none",
                                      "int8_error_ratio": 0.0},
                            "quantize": {"calibration_samples": 8, "validation_samples": 1, "fidelity_samples": 1,
                                         "min_psnr": 0.0, "float_blocks": 0},
                            "account": {"runtimes": FP32 + INT8, "latency_repeats": 2, "latency_warmup": 1,
                                        "threads": 1}})
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    args = (tmp / "params.yaml", tmp)
    run_prune(0.5, *args)
    run_quantize("operating_point", *args)
    run_quantize("student", *args)
    records = {v: run_account(v, *args, progress=False)
               for v in ("teacher", "pruned-0.5", "int8", "student", "student-int8")}
    return tmp, params, records


def test_records_are_numbers_and_read_back(project):
    tmp, _, records = project
    for variant, record in records.items():
        path = Paths(tmp).size_metrics(variant)
        _numbers_only(json.loads(path.read_text()))
        assert SizeRecord.read(path) == record


def test_teacher_record_counts_the_file(project):
    tmp, params, records = project
    t, path = records["teacher"], Paths(tmp).teacher_model
    data = path.read_bytes()
    assert t.bytes == {"file": {"bytes": path.stat().st_size,
                                "gzip_bytes": len(gzip.compress(data, compresslevel=6, mtime=0))}, "dense_fp32": None}
    with safe_open(str(path), framework="pt") as f:
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    gen = t.params["generator"]
    assert gen["params"] + gen["buffers"] == stored == t.stored_elements["f32"]
    # Mapping net: 2 linear layers of 32 x 32 weights + 32 biases.
    assert gen["params"] - t.params["synthesis"]["params"] == 2 * (32 * 32 + 32)
    assert 2 * t.macs["gmac"] * 1e9 == pytest.approx(_torch_flops(load_model(path).config), rel=1e-12)
    assert set(t.latency_ms) == set(FP32) and t.reference_latency_ms == {} and t.latency_over_fp32_same_runtime == {}
    assert t.latency_setup == {"threads": 1, "repeats": 2, "warmup": 1, "batch": 1, "resolution": 32,
                               "cpu": cpu_info()}
    assert t.earlier_study_reproduction["params_listed_after_dynamic_int8_linear"] < \
        t.earlier_study_reproduction["params_before"]
    assert all(records[v].earlier_study_reproduction is None for v in records if v != "teacher")


def test_pruned_record_matches_prune_and_a_dense_rewrite(project, tmp_path):
    tmp, _, records = project
    p, path = records["pruned-0.5"], Paths(tmp).pruned_model(0.5)
    prune = json.loads(Paths(tmp).prune_metrics(0.5).read_text())
    assert p.bytes["file"]["bytes"] == path.stat().st_size
    assert p.params["generator"]["sparsity"] == pytest.approx(prune["sparsity"]["generator"], abs=1e-12)
    assert p.params["synthesis"]["sparsity"] == pytest.approx(prune["sparsity"]["synthesis"], abs=1e-12)
    gen = load_model(path)
    save_generator(gen, tmp_path / "dense.safetensors")   # What the dense fp32 file of these tensors weighs on disk.
    dense = tmp_path / "dense.safetensors"
    assert p.bytes["dense_fp32"] == {"bytes": dense.stat().st_size,
                                     "gzip_bytes": len(gzip.compress(dense.read_bytes(), compresslevel=6, mtime=0))}
    assert p.bytes["file"]["bytes"] < p.bytes["dense_fp32"]["bytes"]
    assert set(p.latency_ms) == set(p.reference_latency_ms) == {"torch_fp32"}
    assert p.latency_over_fp32_same_runtime["torch"] == pytest.approx(
        p.latency_ms["torch_fp32"] / p.reference_latency_ms["torch_fp32"])


def test_int8_records_time_their_files_with_the_fp32_reference(project):
    tmp, _, records = project
    paths = Paths(tmp)
    for variant, source, float_record in (("int8", "operating_point", "pruned-0.5"), ("student-int8", "student",
                                                                                      "student")):
        r = records[variant]
        file = paths.int8_model("openvino", source)    # quantize.engine's file: the IR and its weights
        weights = file.with_suffix(".bin").stat().st_size
        assert r.bytes["file"]["bytes"] == file.stat().st_size + weights
        assert 0 < r.stored_elements["i8"] < weights   # int8 conv weights, one byte each in the .bin
        assert r.params == records[float_record].params and r.macs == records[float_record].macs
        dense = acc.dense_file_bytes(load_model(paths.student_model)) if source == "student" \
            else records["pruned-0.5"].bytes["dense_fp32"]["bytes"]
        assert r.bytes["dense_fp32"]["bytes"] == dense
        assert set(r.latency_ms) == set(INT8) and set(r.reference_latency_ms) == set(FP32) - {"torch_fp32"}
        for family in ("onnxruntime", "openvino"):
            assert r.latency_over_fp32_same_runtime[family] == pytest.approx(
                r.latency_ms[f"{family}_int8"] / r.reference_latency_ms[f"{family}_fp32"])
    s = records["student"]
    assert s.bytes["file"]["bytes"] == paths.student_model.stat().st_size and s.latency_setup["resolution"] == 16
    assert set(s.latency_ms) == set(FP32)


def test_params_choose_the_int8_file_and_the_runtimes(project, tmp_path, monkeypatch):
    tmp, params, _ = project
    import edgestylegan.runtimes.onnx as onnx_runtimes

    def no_export(*args, **kwargs):
        raise AssertionError("the student's float.onnx is reused, never re-exported")

    monkeypatch.setattr(onnx_runtimes, "export_onnx", no_export)
    changed = {**params, "quantize": {**params["quantize"], "engine": "onnxruntime"},
               "account": {**params["account"], "runtimes": ["onnxruntime_int8", "openvino_fp32", "torch_fp32"],
                           "pruned_latency": False}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(changed))
    for folder in ("models",):
        (tmp_path / folder).symlink_to(tmp / folder)
    r = run_account("int8", tmp_path / "params.yaml", tmp_path, progress=False)
    assert r.bytes["file"]["bytes"] == Paths(tmp).int8_model("onnxruntime").stat().st_size
    assert set(r.latency_ms) == {"onnxruntime_int8"} and r.reference_latency_ms == {}   # onnxruntime_fp32 not asked
    assert run_account("pruned-0.5", tmp_path / "params.yaml", tmp_path, progress=False).latency_ms == {}
    s = run_account("student", tmp_path / "params.yaml", tmp_path, progress=False)
    assert set(s.latency_ms) == {"openvino_fp32", "torch_fp32"}


def test_missing_inputs_name_the_file_and_stage(project, tmp_path, root, monkeypatch, capsys):
    tmp, params, _ = project
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "student.safetensors").symlink_to(Paths(tmp).student_model)
    with pytest.raises(UserError, match=r"models/quantized_student/float.onnx not found: run `dvc repro "
                                        r"quantize_student`"):
        run_account("student", tmp_path / "params.yaml", tmp_path, progress=False)
    with pytest.raises(UserError, match=r"models/pruned/0.5.safetensors not found: run `dvc repro prune@0.5`"):
        run_account("pruned-0.5", tmp_path / "params.yaml", tmp_path, progress=False)
    with pytest.raises(UserError, match="not one of prune.amounts"):
        run_account("pruned-0.3", tmp_path / "params.yaml", tmp_path, progress=False)
    monkeypatch.chdir(tmp_path)
    assert run_stage(root, "account", "--variant", "pruned-x") == 2
    assert "pruned-<amount>" in capsys.readouterr().err
    assert not (tmp_path / "metrics").exists()
