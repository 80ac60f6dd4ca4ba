"""int8 quantization: NNCF on OpenVINO and ONNX Runtime's static quantizer, the held-out fidelity gate, the stage."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgestylegan.artifacts.quantize import QuantizeRecord
from edgestylegan.compress import quantize as q
from edgestylegan.config import SCHEMA
from edgestylegan.errors import CheckpointError, UserError
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.models.mobilestylegan import Generator, latents_from_seeds
from edgestylegan.paths import Paths
from edgestylegan.pipeline.loaders import load_model
from edgestylegan.pipeline import quantize as quantize_pipeline
from edgestylegan.pipeline.quantize import check_engine_fidelity
from edgestylegan.runtimes import openvino_profile
from edgestylegan.runtimes.onnx import OnnxRuntimeGenerator, OpenVINOOnnxGenerator, export_onnx
from helpers import run_stage

DEFAULTS = {k: f.default for k, f in SCHEMA["quantize"].items()}


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
    return gen


@pytest.fixture(scope="module")
def float_onnx(setup, tmp_path_factory):
    return export_onnx(setup, tmp_path_factory.mktemp("float") / "float.onnx")


def _weights(model) -> dict[str, np.ndarray]:
    """Every int8 weight constant of an OpenVINO model (what NNCF stored), by node name."""
    return {op.get_friendly_name(): op.get_data() for op in model.get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"}


def _scales(model) -> list[np.ndarray]:
    """Every FakeQuantize's input range (the calibrated activation ranges)."""
    return [op.input_value(1).get_node().get_data() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]


def test_calibration_really_sets_the_ranges(setup, float_onnx):
    recipe = {**DEFAULTS, "float_blocks": 0, "overflow_fix": "disable"}
    model = q.openvino_model(float_onnx)
    a = q.nncf_quantize(model, q.styles_inputs(0, 8, 32, 1.0), recipe)
    b = q.nncf_quantize(q.openvino_model(float_onnx), q.styles_inputs(0, 8, 32, 1.0), recipe)
    c = q.nncf_quantize(q.openvino_model(float_onnx), q.styles_inputs(0, 8, 32, 0.2), recipe)
    ra, rb, rc = (np.concatenate([r.ravel() for r in _scales(m)]) for m in (a, b, c))
    assert len(ra) > 0 and np.array_equal(ra, rb)                # deterministic for the same styles
    assert not np.allclose(ra, rc)                               # other styles (truncated toward w_avg): other ranges
    assert len(_weights(a)) > 0


def _ranges(model) -> np.ndarray:
    """Width of every activation FakeQuantize's input range (weights have constant inputs)."""
    return np.array([float(np.max(op.input_value(2).get_node().get_data() - op.input_value(1).get_node().get_data()))
                     for op in q.activation_quantizers(model)])


def test_range_quantile_clips_the_activation_ranges(setup, float_onnx):
    recipe = {**DEFAULTS, "float_blocks": 0, "overflow_fix": "disable", "range_estimator": "mean_quantile",
              "minmax_tensor_blocks": 0}
    cal = q.styles_inputs(0, 8, 32, 1.0)
    wide, narrow = (_ranges(q.nncf_quantize(q.openvino_model(float_onnx), cal, {**recipe, "range_quantile": t}))
                    for t in (1e-5, 1e-2))
    assert len(wide) == len(narrow) > 0
    assert np.all(narrow <= wide * (1 + 1e-6)) and np.mean(narrow < wide * 0.99) > 0.5, (narrow, wide)


def _ranges_by_kind(model) -> dict[str, list[np.ndarray]]:
    """Every activation FakeQuantize's (low, high) input range, split into per-channel and per-tensor quantizers."""
    out = {"per_channel": [], "per_tensor": []}
    for op in q.activation_quantizers(model):
        low, high = (op.input_value(i).get_node().get_data().ravel() for i in (1, 2))
        out["per_channel" if low.size > 1 else "per_tensor"].append(np.stack([low, high]))
    return out


def test_quantile_estimator_covers_every_calibration_style_per_channel(setup, float_onnx):
    """`quantile` leaves NNCF's own aggregation per quantizer kind: per-tensor ranges are mean_quantile's, the
    per-channel ones (depthwise inputs, whose channel ranges vary from latent to latent) span every calibration
    image's quantiles."""
    recipe = {**DEFAULTS, "float_blocks": 0, "overflow_fix": "disable", "minmax_tensor_blocks": 0}
    cal = q.styles_inputs(0, 8, 32, 1.0)
    spanning, mean = (_ranges_by_kind(q.nncf_quantize(q.openvino_model(float_onnx), cal,
                                                      {**recipe, "range_estimator": estimator}))
                      for estimator in ("quantile", "mean_quantile"))
    assert len(spanning["per_channel"]) > 0 and len(spanning["per_tensor"]) > 0
    for a, b in zip(spanning["per_tensor"], mean["per_tensor"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    wider = [(a[0] <= b[0] + 1e-6).all() and (a[1] >= b[1] - 1e-6).all() and (a[1] - a[0] > (b[1] - b[0]) * 1.01).any()
             for a, b in zip(spanning["per_channel"], mean["per_channel"], strict=True)]
    assert all(wider), wider


def test_minmax_tensor_blocks_take_the_per_image_extremes_per_tensor(setup, float_onnx):
    """minmax_tensor_blocks: the per-tensor ranges of those blocks are NNCF's mean_minmax ones, every per-channel range
    stays the recipe's own; the later blocks keep theirs."""
    recipe = {**DEFAULTS, "float_blocks": 0, "overflow_fix": "disable", "minmax_tensor_blocks": 0}
    cal = q.styles_inputs(0, 8, 32, 1.0)
    plain, every, first, extremes = (
        _ranges_by_kind(q.nncf_quantize(q.openvino_model(float_onnx), cal, {**recipe, **over}))
        for over in ({}, {"minmax_tensor_blocks": 16}, {"minmax_tensor_blocks": 2}, {"range_estimator": "mean_minmax"}))
    for a, b in zip(every["per_channel"], plain["per_channel"], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(every["per_tensor"], extremes["per_tensor"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any((a[1] - a[0] > (b[1] - b[0]) * 1.01).all() for a, b in zip(every["per_tensor"], plain["per_tensor"]))
    taken = [np.array_equal(a, e) and not np.array_equal(a, p)
             for a, p, e in zip(first["per_tensor"], plain["per_tensor"], extremes["per_tensor"], strict=True)]
    kept = [np.array_equal(a, p) for a, p in zip(first["per_tensor"], plain["per_tensor"])]
    assert any(taken) and any(kept) and all(t or k for t, k in zip(taken, kept)), (taken, kept)


def _int8_dot_weight_bounds(model) -> list[int]:
    """max |int8 weight| of every op that runs an int8 dot product over input channels (a Convolution or MatMul whose
    activation input is quantized): from the weight FakeQuantize's levels where the weights are fake-quantized, else
    from the stored int8 values; weight-only int8 (float compute) does not count. Depthwise convolutions are left
    out: NNCF's overflow fix does not cover them (their weights stay 8-bit); they ran fp32 kernels on this machine
    (reports/quantize/layers.csv), and an AVX2 machine's kernels for them are not checked here."""
    out = []
    for op in model.get_ops():
        if op.get_type_name() not in ("Convolution", "MatMul") or \
                op.input_value(0).get_node().get_type_name() != "FakeQuantize":
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() not in ("Constant", "FakeQuantize") and node.get_input_size():
            node = node.input_value(0).get_node()
        if node.get_type_name() == "FakeQuantize":
            out.append(int(node.get_attributes()["levels"]) // 2)
        elif node.get_element_type().get_type_name() == "i8":
            out.append(int(np.abs(node.get_data().astype(np.int32)).max()))
    return out


def test_overflow_fix_bounds_every_pair_sum(setup, float_onnx):
    """Emulates the non-VNNI int8 dot product (VPMADDUBSW: u8 x s8 products summed in adjacent pairs, saturated to
    int16): with overflow_fix the largest possible pair sum 2 * 255 * max|w| fits in int16, without it it does not."""
    cal = q.styles_inputs(0, 8, 32, 1.0)
    recipe = {**DEFAULTS, "float_blocks": 0, "float_ops": []}
    fixed = q.nncf_quantize(q.openvino_model(float_onnx), cal, {**recipe, "overflow_fix": "enable"})
    unfixed = q.nncf_quantize(q.openvino_model(float_onnx), cal, {**recipe, "overflow_fix": "disable"})
    worst = {name: 2 * 255 * max(_int8_dot_weight_bounds(m)) for name, m in (("fixed", fixed), ("unfixed", unfixed))}
    assert worst["fixed"] <= 2**15 - 1 < worst["unfixed"], worst


def test_float_blocks_and_ops_stay_float(setup, float_onnx):
    cal = q.styles_inputs(0, 8, 32, 1.0)
    model = q.openvino_model(float_onnx)
    early = q.early_block_ops(model, 1)
    assert early and q.early_block_ops(model, 0) == []
    assert set(q.early_block_ops(model, 2)) > set(early)
    late = q.late_block_ops(model, 1)
    assert q.late_block_ops(model, 0) == [] and set(q.late_block_ops(model, 2)) > set(late) > set(q.head_ops(model))
    assert not set(late) & set(q.early_block_ops(model, 1))
    head = q.head_ops(model)
    kinds = [op.get_type_name() for op in model.get_ordered_ops() if op.get_friendly_name() in head]
    assert kinds[0] == "Convolution" and "Convolution" not in kinds[1:] and kinds[-1] == "DepthToSpace", kinds
    quantized = q.nncf_quantize(model, cal, {**DEFAULTS, "float_blocks": 1, "float_head": True,
                                             "float_ops": ["MatMul"]})
    last_float = q.nncf_quantize(q.openvino_model(float_onnx), cal, {**DEFAULTS, "float_blocks": 0,
                                                                      "float_ops": ["MatMul"]}, float_last_blocks=1)
    quantizes = {op.get_friendly_name() for op in quantized.get_ops()
                 if "FakeQuantize" in [i.get_source_output().get_node().get_type_name() for i in op.inputs()]}
    assert quantizes, "nothing was quantized"
    for op in quantized.get_ops():
        if op.get_type_name() in ("MatMul",) or op.get_friendly_name() in early + head:
            feeds = [i.get_source_output().get_node().get_type_name() for i in op.inputs()]
            assert "FakeQuantize" not in feeds, op.get_friendly_name()
    convs = {op.get_friendly_name(): any(i.get_source_output().get_node().get_type_name() == "FakeQuantize"
                                         for i in op.inputs())
             for op in last_float.get_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")}
    assert any(int8 for name, int8 in convs.items() if name not in late), "nothing below the last block was quantized"
    assert not any(int8 for name, int8 in convs.items() if name in late), "a conv of the float last block has int8 input"


def test_inverse_haar_transforms_stay_float_in_both_engines(setup, float_onnx, tmp_path):
    import onnx

    cal = q.styles_inputs(0, 8, 32, 1.0)
    recipe = {**DEFAULTS, "float_blocks": 0, "float_ops": []}
    model = q.openvino_model(float_onnx)
    haar = q.inverse_haar_convs(model)
    assert len(haar) == len(setup.synthesis.blocks) + 1 and any("/to_rgb/" in n for n in haar), haar
    assert len(q.inverse_haar_convs(onnx.load(str(float_onnx)))) == len(haar)
    quantized = q.nncf_quantize(model, cal, recipe)
    feeds = {op.get_friendly_name(): [i.get_source_output().get_node().get_type_name() for i in op.inputs()]
             for op in quantized.get_ops() if op.get_type_name() == "GroupConvolution"}
    assert all("FakeQuantize" not in feeds[n] for n in haar), feeds
    assert any("FakeQuantize" in f for n, f in feeds.items() if n not in haar)   # the depthwise convs are int8
    q.ort_quantize(float_onnx, tmp_path / "int8.onnx", cal, recipe)
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    weights = {n.name: producer.get(n.input[1]) for n in graph.node if n.op_type == "Conv"}   # int8: dequantized
    assert all(weights[n] != "DequantizeLinear" for n in haar), weights
    assert all(w == "DequantizeLinear" for n, w in weights.items() if n not in haar), weights


def test_engines_and_profile(setup, float_onnx, tmp_path):
    """Both engines' files run, stay close to fp32 on a tiny net, and the profile finds the int8 convolutions."""
    gen = setup
    cal, held = q.styles_inputs(0, 16, 32, 1.0), q.styles_inputs(100, 4, 32, 1.0)
    with torch.no_grad():
        reference = [gen(torch.from_numpy(x["z"])).numpy() for x in held]
    recipe = {**DEFAULTS, "float_blocks": 0, "float_ops": []}
    from edgestylegan.runtimes.onnx import save_openvino_ir, stamp_onnx_metadata

    xml = save_openvino_ir(q.nncf_quantize(q.openvino_model(float_onnx), cal, recipe), tmp_path / "int8.xml",
                           gen.config, "int8")
    q.ort_quantize(float_onnx, tmp_path / "int8.onnx", cal, recipe)
    stamp_onnx_metadata(tmp_path / "int8.onnx", gen.config, "int8")
    for model in (load_model(xml), OnnxRuntimeGenerator(tmp_path / "int8.onnx")):
        p = q.psnr_per_image([model.run_numpy(x["z"], 1.0) for x in held], reference)
        assert np.mean(p) > 20 and 12 < min(p) and max(p) < 80, p    # int8: close, but not identical
    int8 = load_model(xml)
    int8.run_numpy(np.concatenate([x["z"] for x in held]), 1.0)
    assert not int8.runner.concurrent and int8.runner._throughput is None
    # The file itself switches off OpenVINO's on-the-fly activation quantization of weight-compressed linears (on
    # by default where the CPU has VNNI or AMX): the same int8 arithmetic on every CPU, for any user who compiles it.
    assert int8.runner.latency.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE") == 0
    rows = openvino_profile.profile(xml, held[0], repeats=1)
    summary = openvino_profile.summary(rows)
    macs = openvino_profile.conv_macs(q.openvino_model(float_onnx))
    assert summary["conv_macs"] == sum(macs.values()) > 0
    assert summary["int8_convs"] > 0 and 0 < summary["int8_conv_mac_fraction"] <= 1
    depthwise = [r for r in rows if r["conv_macs"] and r["layer_type"] == "Convolution"
                 and "depthwise" in r["node"]]
    assert depthwise and all(openvino_profile.int8_kernel(r) for r in depthwise), depthwise   # folded kernels
    fp32 = openvino_profile.summary(openvino_profile.profile(float_onnx, held[0], repeats=1))
    assert fp32["int8_convs"] == 0 and fp32["conv_macs"] == summary["conv_macs"]


def test_openvino_batches_of_fp32_run_concurrently(setup, float_onnx):
    """A batch of an fp32 export runs its rows concurrently (throughput compilation), in order and equal to the rows
    run one at a time (int8 graphs keep the one-by-one latency compilation: test_engines_and_profile)."""
    z = latents_from_seeds(range(6), 32).numpy()
    fp32 = OpenVINOOnnxGenerator(float_onnx)
    rows = np.concatenate([fp32.run_numpy(r[None], 0.7) for r in z])
    assert fp32.runner._throughput is None
    np.testing.assert_array_equal(fp32.run_numpy(z, 0.7), rows)
    assert fp32.runner._throughput is not None
    with torch.no_grad():
        np.testing.assert_allclose(rows, setup(torch.from_numpy(z), truncation=0.7).numpy(), atol=1e-4)


def test_accuracy_control_reverts_quantizers_to_reach_the_target(setup, float_onnx):
    """nncf.quantize_with_accuracy_control with a target above what plain PTQ reaches on the validation latents: the
    result scores higher there than plain PTQ (quantizers were reverted)."""
    gen = setup
    cal = q.styles_inputs(0, 8, 32, 1.0)
    val = q.styles_inputs(200, 4, 32, 1.0)
    with torch.no_grad():
        reference = [gen(torch.from_numpy(x["z"])).numpy() for x in val]
    recipe = {**DEFAULTS, "float_blocks": 0}   # Default float_ops: fewer quantizers to rank (~20 s, not ~60 s).
    plain = np.mean(q.psnr_per_image([_compiled(q.nncf_quantize(q.openvino_model(float_onnx), cal, recipe))(x)[0]
                                      for x in val], reference))
    target = {**recipe, "accuracy_control": True, "min_psnr": float(plain) + 3.0}
    controlled = q.nncf_quantize(q.openvino_model(float_onnx), cal, target, (val, reference))
    run = _compiled(controlled)
    assert np.mean(q.psnr_per_image([run(x)[0] for x in val], reference)) > plain + 1.0


def _compiled(model):
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _record(**psnr):
    return QuantizeRecord(operating_point={}, engine="openvino", recipe={}, psnr_db=psnr, psnr_db_min=psnr,
                          psnr_db_per_latent={k: [v] for k, v in psnr.items()}, psnr_target_db=30.0,
                          psnr_meets_target={k: int(v is not None and v >= 30.0) for k, v in psnr.items()},
                          num_fidelity_latents=1, fp32_reference={}, openvino_profile={}, quantize_seconds={}, cpu={})


def test_only_the_engine_missing_the_target_fails(capsys):
    check_engine_fidelity(_record(openvino_int8=31.0, onnxruntime_int8=29.0))
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 1 and "onnxruntime_int8 is 29.00 dB" in warned[0]
    with pytest.raises(UserError, match=r"quantize.engine = openvino: .* is a non-finite value, below"):
        check_engine_fidelity(_record(openvino_int8=None, onnxruntime_int8=31.0))
    with pytest.raises(UserError, match=r"quantize.engine = openvino: .* is 29.00 dB, below quantize.min_psnr"):
        check_engine_fidelity(_record(openvino_int8=29.0, onnxruntime_int8=31.0))


def _project(tmp_path, gen, **quantize):
    save_generator(gen, tmp_path / "models" / "teacher.safetensors")
    params = {"prune": {"base": "teacher", "amounts": [0.5], "amount": 0.0, "method": "l1", "allocation": "global",
                        "recovery": "none", "targets": "all", "seed": 0},
              "quantize": {**DEFAULTS, "calibration_samples": 8, "validation_samples": 2, "fidelity_samples": 2,
                           "float_blocks": 0, **quantize}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_fp32_reference_falls_back_to_pytorch_when_openvino_differs(root, tmp_path, monkeypatch, setup):
    gen = setup
    project = _project(tmp_path, gen, min_psnr=0.0)
    monkeypatch.chdir(project)
    monkeypatch.setattr(quantize_pipeline, "FP32_REFERENCE_TOLERANCE", -1.0)   # any difference is too large
    assert run_stage(root, "quantize") == 0
    record = QuantizeRecord.read(Paths(project).quantize_metrics())
    assert record.fp32_reference["runtime"] == "pytorch"
    assert "differs from pytorch" in record.fp32_reference["fallback_reason"]
    p = yaml.safe_load((project / "params.yaml").read_text())["quantize"]
    held = q.styles_inputs(p["fidelity_seed"], p["fidelity_samples"], gen.style_dim, p["truncation"])
    with torch.no_grad():
        reference = [gen(torch.from_numpy(x["z"])).numpy() for x in held]
    int8 = load_model(Paths(project).int8_model("openvino"))
    assert record.psnr_db_per_latent["openvino_int8"] == pytest.approx(
        q.psnr_per_image([int8.run_numpy(x["z"], 1.0) for x in held], reference), abs=1e-6)


def _contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_quantize_stage(root, tmp_path, monkeypatch, capsys, setup):
    gen = setup
    # A target the tiny net passes even all-int8, so the float site is the one keep_float forces.
    project = _project(tmp_path, gen, min_psnr=20.0)
    monkeypatch.chdir(project)
    assert run_stage(root, "quantize") == 0
    paths = Paths(project)
    record = QuantizeRecord.read(paths.quantize_metrics())
    assert sorted(p.name for p in paths.quantized_dir().iterdir()) == ["float.onnx", "int8.bin", "int8.onnx",
                                                                       "int8.xml"]
    assert record.operating_point == {"prune_amount": 0.0} and record.engine == "openvino"
    # Each PSNR is that of the stored file on its runtime, against the fp32 source, on the held-out latents.
    p = yaml.safe_load((project / "params.yaml").read_text())["quantize"]
    held = q.styles_inputs(p["fidelity_seed"], p["fidelity_samples"], gen.style_dim, p["truncation"])
    with torch.no_grad():
        reference = [gen(torch.from_numpy(x["z"])).numpy() for x in held]
    for key, model in {"onnxruntime_int8": OnnxRuntimeGenerator(paths.int8_model("onnxruntime")),
                       "openvino_int8": load_model(paths.int8_model("openvino"))}.items():
        measured = q.psnr_per_image([model.run_numpy(x["z"], 1.0) for x in held], reference)
        assert record.psnr_db_per_latent[key] == pytest.approx(measured, abs=1e-3)
        assert record.psnr_db[key] == pytest.approx(float(np.mean(measured)), abs=1e-3)
    assert record.psnr_meets_target == {k: int(v >= 20.0) for k, v in record.psnr_db.items()}
    assert record.fp32_reference["runtime"] == "openvino-cpu-f32"
    assert 0 <= record.fp32_reference["max_abs"] <= record.fp32_reference["tolerance"]
    layers = paths.quantize_layers().read_text().splitlines()
    assert layers[0].startswith("model,node,layer_type") and any(",int8," in r or r.startswith("int8,") for r in layers)
    assert record.openvino_profile["int8"]["int8_convs"] > 0 == record.openvino_profile["fp32"]["int8_convs"]

    # The default engine missing quantize.min_psnr fails the stage and leaves every output as it was.
    before = _contents(project)
    p["min_psnr"] = 60.0
    (project / "params.yaml").write_text(yaml.safe_dump({"prune": yaml.safe_load(
        (project / "params.yaml").read_text())["prune"], "quantize": p}))
    capsys.readouterr()
    assert run_stage(root, "quantize") == 2
    err = capsys.readouterr().err
    assert "error: quantize.engine = openvino:" in err and "below quantize.min_psnr = 60.0 dB" in err
    assert "warning: int8-vs-fp32 PSNR on onnxruntime_int8" in err
    after = _contents(project)
    assert after.pop(Path("params.yaml")) != before.pop(Path("params.yaml")) and after == before
    assert not any(p.name.startswith(".quantized") for p in (project / "models").iterdir())


def test_quantize_student(root, tmp_path, monkeypatch, capsys, setup):
    """quantize_student: --source student quantizes models/student.safetensors into its own folder and files."""
    project = _project(tmp_path, setup, min_psnr=0.0)
    monkeypatch.chdir(project)
    assert run_stage(root, "quantize", "--source", "student") == 2      # no student yet
    assert "run `dvc repro distill`" in capsys.readouterr().err
    assert run_stage(root, "quantize", "--source", "models/teacher.safetensors") == 2   # a path is not a source
    assert sorted(p.name for p in project.rglob("*")) == ["models", "params.yaml", "teacher.safetensors"]
    save_generator(setup, project / "models" / "student.safetensors")
    assert run_stage(root, "quantize", "--source", "student") == 0
    paths = Paths(project)
    assert (paths.int8_model("openvino", "student")).is_file() and paths.quantize_layers("student").is_file()
    assert not paths.quantized_dir().exists() and not paths.quantize_metrics().exists()
    assert QuantizeRecord.read(paths.quantize_metrics("student")).operating_point == {}


def test_histogram_calibration_too_big_for_memory_stops_before_calibrating(root, tmp_path, monkeypatch, capsys,
                                                                            setup):
    """ONNX Runtime's entropy / percentile calibrators keep every conv activation of every calibration sample (the
    1024² teacher: 0.8 GiB each): a run that cannot fit exits 2 before NNCF starts, with nothing written."""
    model = q.openvino_model(export_onnx(setup, tmp_path / "f.onnx"))
    one = q.ort_calibration_bytes(model, 1)
    side = setup.resolution // 2   # the last block's convs run at half the output size
    assert one > 4 * 16 * side * side and q.ort_calibration_bytes(model, 8) == 8 * one

    project = _project(tmp_path / "p", setup, ort_calibration="percentile", min_psnr=0.0)
    monkeypatch.chdir(project)
    monkeypatch.setattr(quantize_pipeline, "available_memory", lambda: 8 * one)   # 8 samples need more than 80 %
    monkeypatch.setattr(q, "nncf_quantize", lambda *a, **k: pytest.fail("NNCF ran"))
    assert run_stage(root, "quantize") == 2
    err = capsys.readouterr().err
    assert "quantize.ort_calibration = percentile keeps every conv activation of the 8 calibration samples" in err
    assert "use ort_calibration minmax, or fewer quantize.calibration_samples" in err
    assert sorted(p.name for p in project.rglob("*")) == ["models", "params.yaml", "teacher.safetensors"]


def test_quantize_stage_needs_the_pruned_operating_point(root, tmp_path, monkeypatch, capsys, setup):
    project = _project(tmp_path, setup)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prune"]["amount"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project)
    assert run_stage(root, "quantize") == 2
    err = capsys.readouterr().err
    assert "prune.amount = 0.5 needs" in err and "run `dvc repro prune`" in err
    assert sorted(p.name for p in project.rglob("*")) == ["models", "params.yaml", "teacher.safetensors"]


@pytest.mark.parametrize("bad, message", [
    ({"preset": "foo"}, "quantize.preset = 'foo' is not a known option"),
    ({"calibration_samples": 0}, "quantize.calibration_samples = 0 is out of range"),
    ({"engine": "tensorrt"}, "quantize.engine = 'tensorrt' is not a known option"),
    ({"float_ops": ["Convolution"]}, "quantize.float_ops"),
    ({"fidelity_seed": 1234}, "quantize.calibration_seed .. + calibration_samples overlaps quantize.fidelity_seed"),
    ({"engine": "onnxruntime", "min_psnr": 60.0}, "quantize.engine = onnxruntime: its int8 model"),
])
def test_quantize_stage_rejects_bad_params_without_output(root, tmp_path, monkeypatch, capsys, setup, bad, message):
    project = _project(tmp_path, setup, **bad)
    monkeypatch.chdir(project)
    assert run_stage(root, "quantize") == 2
    assert message in capsys.readouterr().err
    assert not (project / "models/quantized").exists() and not (project / "metrics").exists()
    assert not (project / "reports").exists()
    assert not any(p.name.startswith(".quantized") for p in (project / "models").iterdir())


def test_only_a_student_keeps_its_last_blocks_float():
    p = {**DEFAULTS, "student_float_last_blocks": 2}
    assert quantize_pipeline.float_last_blocks(p, "student", {}) == 2          # quantize_student reads no prune key
    assert quantize_pipeline.float_last_blocks(p, "operating_point", {"base": "student"}) == 2
    assert quantize_pipeline.float_last_blocks(p, "operating_point", {"base": "teacher"}) == 0


def test_quantizer_sensitivity_bypasses_and_emulates_the_quantizers(setup, float_onnx, tmp_path):
    import shutil

    import openvino as ov

    from edgestylegan.pipeline import quantize_sensitivity as sens
    from edgestylegan.runtimes.onnx import compile_openvino, save_openvino_ir

    recipe = {**DEFAULTS, "float_blocks": 0}
    paths = Paths(tmp_path)
    paths.float_onnx().parent.mkdir(parents=True)
    shutil.copy(float_onnx, paths.float_onnx())
    xml = save_openvino_ir(q.nncf_quantize(q.openvino_model(float_onnx), q.styles_inputs(0, 8, 32, 1.0), recipe),
                           paths.int8_model("openvino"), setup.config, "int8")
    names = {op.get_friendly_name() for op in q.activation_quantizers(ov.Core().read_model(str(xml)))}
    assert len(names) > 2
    assert q.activation_quantizers(sens.with_active_quantizers(xml, set())) == []
    one = sorted(names)[0]
    assert [op.get_friendly_name() for op in q.activation_quantizers(sens.with_active_quantizers(xml, {one}))] == [one]

    model = ov.Core().read_model(str(xml))                   # The emulation is OpenVINO's own FakeQuantize.
    quantizers = q.activation_quantizers(model)
    first = len(model.outputs)
    model.add_outputs([o for op in quantizers for o in (op.input_value(0), op.output(0))])
    result = compile_openvino(model)(q.styles_inputs(100, 1, 32, 1.0)[0])
    for i, op in enumerate(quantizers):
        low, high = (op.input_value(k).get_node().get_data() for k in (1, 2))
        _, emulated = sens.fake_quantize(result[first + 2 * i], low, high, op.get_levels())
        step = float(np.max(high - low)) / (op.get_levels() - 1)
        off = np.abs(emulated - result[first + 2 * i + 1])     # float32 vs float64 ties may land one level apart
        assert off.max() <= 1.001 * step and np.mean(off > 0.01 * step) < 0.01, op.get_friendly_name()

    params = tmp_path / "params.yaml"
    params.write_text(Path("params.yaml").read_text())
    rows = sens.run_quantize_sensitivity(params, tmp_path, threads=1)
    assert {r["quantizer"] for r in rows} == names
    text = (paths.reports / "benchmarks" / "quantize_sensitivity.md").read_text()
    none = float(text.split("none active (int8 weights only, float activations): ")[1].split(" dB")[0])
    every = float(text.split("every activation quantizer active (the int8 model): ")[1].split(" dB")[0])
    assert none > every and all(every - 0.5 < r["psnr_db_without"] and r["psnr_db_alone"] < none + 0.5 for r in rows)
    assert all(r["sqnr_db_rounding"] > 0 and r["sqnr_db_clipping"] > 0 for r in rows)

    xml.write_text("<net>not an IR")                          # Corrupt, then missing: each names its fix.
    with pytest.raises(CheckpointError, match="int8.xml is not a readable OpenVINO IR"):
        sens.run_quantize_sensitivity(params, tmp_path, threads=1)
    xml.unlink()
    with pytest.raises(UserError, match=r"int8.xml not found; run `dvc repro quantize`"):
        sens.run_quantize_sensitivity(params, tmp_path, threads=1)
