"""int8 quantization: calibration, the fake-quant simulator, float-site search, both engines, files, the stage."""
import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from edgestylegan.imaging import psnr
from edgestylegan.artifacts.quantize import QuantizeRecord
from edgestylegan.compress import quantize as q
from edgestylegan.errors import UserError
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.models.mobilestylegan import Generator
from edgestylegan.paths import Paths
from edgestylegan.pipeline.loaders import load_model
from edgestylegan.pipeline.quantize import check_engine_fidelity
from edgestylegan.runtimes.onnx import OnnxRuntimeGenerator, OpenVINOOnnxGenerator, export_onnx
from helpers import run_stage


@pytest.fixture(scope="module")
def setup():
    from edgestylegan.models.mobilestylegan import GeneratorConfig

    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(style_dim=32, mapping_layers=2, resolution=32, channels=(32, 32, 32, 16))).eval()
    with torch.no_grad():   # Tame the random init (activations grow ~20x per upsampling) to image-like outputs.
        for name, m in gen.synthesis.named_modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(0.05)
                if name.endswith("up.modulation"):
                    m.bias.fill_(0.5)
        gen.synthesis.blocks[-1].to_img.conv.conv.weight.mul_(0.5 / float(gen(torch.randn(8, 32)).std()))
    gen.estimate_w_avg(256, 0)
    cal = q.calibrate(gen, 16, 7, progress=False)
    z = q.latents([0, 1, 2], 32)
    return gen, cal, z


def test_sites_and_storage_plan(setup):
    gen, _, _ = setup
    sites = q.conv_sites(gen)
    assert list(sites) == ["conv1", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2",
                           "blocks.1.to_img"]
    plan = q.storage_plan(gen, ["blocks.0.conv1"], float_weights="fp16")
    assert plan["synthesis.blocks.0.conv1.conv.depthwise.weight"] == "int8"
    assert plan["synthesis.conv1.conv.conv.weight"] == "fp16"
    assert plan["mapping.layers.0.weight"] == "fp16"
    assert plan["synthesis.blocks.1.conv2.conv.modulation.weight"] == "int8"
    assert "synthesis.conv1.conv.conv.bias" not in plan


def test_calibration_ranges(setup):
    gen, cal, _ = setup
    mm = cal.ranges("minmax", 255)
    mse = cal.ranges("mse", 255)
    for site, pts in mm.items():
        for pt, (lo, hi) in pts.items():
            assert lo <= hi
            assert mse[site][pt][0] >= lo - 1e-6 and mse[site][pt][1] <= hi + 1e-6   # mse only clips
    assert set(mm["blocks.0.conv1"]) == {"in", "mid", "out"} and set(mm["conv1"]) == {"in", "out"}
    assert cal.record()["num_samples"] == 16


def test_weight_quantization_round_trip():
    w = torch.randn(8, 4, 3, 3)
    qw, s = q.quantize_weight_per_channel(w)
    assert qw.dtype == torch.int8 and qw.abs().max() <= 127
    err = (q.dequantize_weight(qw, s) - w).abs().reshape(8, -1).amax(1)
    assert torch.all(err <= s / 2 + 1e-7)


def test_simulator_and_search(setup):
    gen, cal, z = setup
    sim = q.FakeQuantSimulator(gen, cal.ranges("mse", 255), 255, z, 1.0)
    sites = list(q.conv_sites(gen))
    none, every = sim.psnr([]), sim.psnr(sites)
    assert none > every + 3      # a random tiny net is far more fragile than the teacher; only the order matters
    macs = q.site_macs(gen)
    target = (none + every) / 2
    res = q.select_float_sites(sim, target, ["conv1"], macs, progress=False)
    assert "conv1" in res["float_sites"] and res["psnr"] >= target
    assert sim.psnr([s for s in sites if s not in res["float_sites"]]) == pytest.approx(res["psnr"])
    # Target already met: nothing kept float beyond keep_float; min_psnr 0: everything int8.
    assert q.select_float_sites(sim, 0, [], macs, progress=False)["float_sites"] == []


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_torch_engine_matches_simulation_and_reloads_exactly(setup, tmp_path, monkeypatch, backend):
    gen, cal, z = setup
    sites = list(q.conv_sites(gen))
    int8_sites = sites[1:]
    ranges = cal.ranges("mse", q.QMAX[backend])
    model = q.build_torch_int8(gen, ranges, int8_sites, backend)
    assert type(model.synthesis.blocks[0].conv1.conv.depthwise[1]).__module__.startswith("torch.ao.nn.quantized")
    assert isinstance(model.synthesis.conv1.conv.conv, torch.nn.Conv2d)          # kept float
    ref = q.images_of(gen, z, 1.0)
    out = q.images_of(model, z, 1.0)
    sim = q.FakeQuantSimulator(gen, ranges, q.QMAX[backend], z, 1.0, ref)
    assert abs(float(psnr(out, ref).mean()) - sim.psnr(int8_sites)) < 3.0
    path = tmp_path / "int8.safetensors"
    q.save_torch_int8(gen, ranges, int8_sites, backend, path)
    loaded = load_model(path)
    assert loaded.resolution == 32 and loaded.quantization["backend"] == backend
    assert torch.equal(q.images_of(loaded, z, 0.7), q.images_of(model, z, 0.7))
    with safe_open(str(path), "pt") as f:                     # a safetensors file of our format...
        assert f.metadata()["format"] == q.TORCH_FORMAT
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the int8 loader unpickled something"))
    assert torch.equal(q.images_of(load_model(path), z, 0.7), q.images_of(model, z, 0.7))   # ...loaded without pickle
    dense = tmp_path / "dense.safetensors"
    save_generator(gen, dense)
    assert path.stat().st_size < 0.5 * dense.stat().st_size


def test_onnx_engine(setup, tmp_path):
    gen, cal, z = setup
    sites = list(q.conv_sites(gen))
    float_path = export_onnx(gen, tmp_path / "float.onnx")
    ref = q.images_of(gen, z, 0.8)
    fp32 = load_model(float_path)
    assert isinstance(fp32, OnnxRuntimeGenerator) and fp32.resolution == 32 and fp32.style_dim == 32
    assert float((q.images_of(fp32, z, 0.8) - ref).abs().max()) < 1e-4
    ov = OpenVINOOnnxGenerator(float_path)
    assert float((q.images_of(ov, z, 0.8) - ref).abs().max()) < 1e-4
    ranges = cal.ranges("mse", 255)
    record = q.build_onnx_int8(float_path, tmp_path / "int8.onnx", gen, ranges, sites[2:], z.numpy())
    assert record["int8_conv_nodes"] == sum(2 if ".conv" in s and "to_img" not in s else 1 for s in sites[2:])
    int8 = load_model(tmp_path / "int8.onnx")
    out = q.images_of(int8, z, 0.8)
    sim = q.FakeQuantSimulator(gen, ranges, 255, z, 0.8, ref)
    assert abs(float(psnr(out, ref).mean()) - sim.psnr(sites[2:])) < 3.0
    assert (tmp_path / "int8.onnx").stat().st_size < float_path.stat().st_size   # tiny nets: graph overhead dominates
    from edgestylegan.metrics.accounting import stored_elements

    elements = stored_elements(tmp_path / "int8.onnx")
    modulation = sum(m.weight.numel() for n, m in gen.synthesis.named_modules() if isinstance(m, torch.nn.Linear))
    assert elements["int8"] >= modulation + sum(c.weight.numel() for s in sites[2:]
                                                for c in q._site_convs(q.conv_sites(gen)[s]))
    assert elements["float16"] >= sum(m.weight.numel() for m in gen.mapping.layers)
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Cast"} <= ops


def test_quantizer_silencing_is_scoped():
    import logging

    def quantizer_notice():
        path = q._ORT_QUANTIZER + "quantize.py"
        return logging.LogRecord("root", logging.WARNING, path, 1, "pre-process", None, None)

    other = logging.LogRecord("root", logging.WARNING, "elsewhere.py", 1, "kept", None, None)
    filters = list(logging.root.filters)
    with q._quiet():
        assert not logging.root.filter(quantizer_notice()) and logging.root.filter(other)
    assert logging.root.filters == filters and logging.root.filter(quantizer_notice())
    assert logging.root.manager.disable == logging.NOTSET


def _record(**psnr):
    return QuantizeRecord(operating_point={}, psnr_db=psnr, psnr_db_min=psnr, psnr_target_db=30.0,
                          psnr_meets_target={k: int(v is not None and v >= 30.0) for k, v in psnr.items()},
                          simulated_psnr_db={}, all_int8={}, sites={}, tradeoff_simulated_psnr_db={},
                          num_fidelity_latents=1)


def test_only_the_default_engine_missing_the_target_fails(capsys):
    record = _record(onnxruntime_int8=31.0, openvino_int8=29.0, torch_int8=None)
    check_engine_fidelity(record, "onnxruntime")
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 2 and "openvino_int8 is 29.00 dB" in warned[0] and "torch_int8 is a non-finite" in warned[1]
    with pytest.raises(UserError, match=r"quantize.engine = torch: .* on torch_int8 is a non-finite value, below"):
        check_engine_fidelity(record, "torch")
    with pytest.raises(UserError, match=r"quantize.engine = onnxruntime: .* on onnxruntime_int8 is 29.00 dB"):
        check_engine_fidelity(_record(onnxruntime_int8=29.0, openvino_int8=31.0, torch_int8=31.0), "onnxruntime")


def _project(tmp_path, gen, **quantize):
    save_generator(gen, tmp_path / "models" / "teacher.safetensors")
    params = {"prune": {"base": "teacher", "amounts": [0.5], "amount": 0.0, "method": "l1", "scope": "global",
                        "targets": "all", "seed": 0},
              "quantize": {"engine": "onnxruntime", "backend": "x86", "calibration_samples": 8,
                           "calibration_seed": 1, "calibration": "mse", "truncation": 1.0, "fidelity_seeds": [0, 1],
                           "min_psnr": 30.0, "keep_float": [], "float_weights": "int8", **quantize}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_quantize_stage(root, tmp_path, monkeypatch, capsys, setup):
    gen = setup[0]
    # A target the tiny net passes even all-int8, so the float site is the one keep_float forces.
    project = _project(tmp_path, gen, keep_float=["conv1"], min_psnr=20.0)
    monkeypatch.chdir(project)
    assert run_stage(root, "quantize") == 0
    paths = Paths(project)
    record = QuantizeRecord.read(paths.quantize_metrics())
    assert sorted(p.name for p in paths.quantized_dir().iterdir()) == ["float.onnx", "int8.onnx",
                                                                       "int8_torch.safetensors"]
    assert record.operating_point == {"prune_amount": 0.0} and "bytes" not in record.to_dict()
    # Each PSNR is that of the stored file on its runtime, against the fp32 source.
    p = yaml.safe_load((project / "params.yaml").read_text())["quantize"]
    z = q.latents(p["fidelity_seeds"], gen.config.style_dim)
    reference = q.images_of(gen, z, p["truncation"])
    for key, model in {"onnxruntime_int8": OnnxRuntimeGenerator(paths.int8_model("onnxruntime")),
                       "torch_int8": load_model(paths.int8_model("torch"))}.items():
        measured = psnr(q.images_of(model, z, p["truncation"]), reference)
        assert record.psnr_db[key] == pytest.approx(float(measured.mean()), abs=1e-4)
        assert record.psnr_db_min[key] == pytest.approx(float(measured.min()), abs=1e-4)
    assert record.psnr_meets_target == {k: int(v >= 20.0) for k, v in record.psnr_db.items()}
    assert record.sites["float"] == 1 and record.sites["int8"] == record.sites["total"] - 1
    assert set(record.all_int8) == {"onnxruntime_int8_psnr_db", "int8_onnx_bytes"}   # a float site: both ends
    report = json.loads(paths.quantize_record().read_text())
    assert report["modules"]["synthesis.conv1.conv.conv"].startswith("fp32 compute")
    int8_convs = [c for site, m in q.conv_sites(gen).items() if site != "conv1" for c in q._site_convs(m)]
    assert report["onnx"]["int8_conv_nodes"] == len(int8_convs)
    sites = list(csv.DictReader(paths.quantize_sites().read_text().splitlines()))
    assert [r["site"] for r in sites if r["precision"] != "int8"] == ["conv1"]

    # The default engine missing quantize.min_psnr fails the stage and leaves every output as it was.
    before = _contents(project)
    p["min_psnr"] = 60.0
    (project / "params.yaml").write_text(yaml.safe_dump({"prune": yaml.safe_load(
        (project / "params.yaml").read_text())["prune"], "quantize": p}))
    capsys.readouterr()
    assert run_stage(root, "quantize") == 2
    err = capsys.readouterr().err
    assert "error: quantize.engine = onnxruntime:" in err and "below quantize.min_psnr = 60.0 dB" in err
    assert "warning: int8-vs-fp32 PSNR on torch_int8" in err
    after = _contents(project)
    assert after.pop(Path("params.yaml")) != before.pop(Path("params.yaml")) and after == before
    assert not any(p.name.startswith(".quantized") for p in (project / "models").iterdir())


def test_quantize_student(root, tmp_path, monkeypatch, capsys, setup):
    """quantize_student: --source student quantizes models/student.safetensors into its own folder and files."""
    project = _project(tmp_path, setup[0], min_psnr=0.0)
    monkeypatch.chdir(project)
    assert run_stage(root, "quantize", "--source", "student") == 2      # no student yet
    assert "run `dvc repro distill`" in capsys.readouterr().err
    assert run_stage(root, "quantize", "--source", "models/teacher.safetensors") == 2   # a path is not a source
    assert sorted(p.name for p in project.rglob("*")) == ["models", "params.yaml", "teacher.safetensors"]
    save_generator(setup[0], project / "models" / "student.safetensors")
    assert run_stage(root, "quantize", "--source", "student") == 0
    paths = Paths(project)
    assert (paths.int8_model("onnxruntime", "student")).is_file() and paths.quantize_sites("student").is_file()
    assert not paths.quantized_dir().exists() and not paths.quantize_metrics().exists()
    record = QuantizeRecord.read(paths.quantize_metrics("student"))
    assert record.operating_point == {} and record.sites["int8"] == record.sites["total"]
    assert record.all_int8 == {}                                          # nothing float: no other end


def test_quantize_stage_needs_the_pruned_operating_point(root, tmp_path, monkeypatch, capsys, setup):
    project = _project(tmp_path, setup[0])
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prune"]["amount"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    assert run_stage(root, "quantize") == 2
    err = capsys.readouterr().err
    assert "prune.amount = 0.5 needs" in err and "run `dvc repro prune`" in err
    assert sorted(p.name for p in project.rglob("*")) == ["models", "params.yaml", "teacher.safetensors"]


@pytest.mark.parametrize("bad, message", [
    ({"backend": "foo"}, "quantize.backend = 'foo' is not a known option"),
    ({"calibration_samples": 0}, "quantize.calibration_samples = 0 is out of range"),
    ({"engine": "tensorrt"}, "quantize.engine = 'tensorrt' is not a known option"),
    ({"keep_float": ["blocks.9.conv1"]}, "quantize.keep_float: unknown site"),
    ({"engine": "torch", "min_psnr": 60.0, "fidelity_seeds": [0]}, "quantize.engine = torch: its int8 model"),
])
def test_quantize_stage_rejects_bad_params_without_output(root, tmp_path, monkeypatch, capsys, setup, bad, message):
    project = _project(tmp_path, setup[0], **bad)
    monkeypatch.chdir(project)
    assert run_stage(root, "quantize") == 2
    assert message in capsys.readouterr().err
    assert not (project / "models/quantized").exists() and not (project / "metrics").exists()
    assert not (project / "reports").exists()
    assert not any(p.name.startswith(".quantized") for p in (project / "models").iterdir())
