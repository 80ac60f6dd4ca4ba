"""Static int8 post-training quantization of a float generator, done by the libraries built for it.

Engines (both are built and measured; quantize.engine names the one that is the `int8` variant downstream):

* `openvino` (default, the deployable one): NNCF's post-training quantization of the OpenVINO model of the float
  ONNX export (`nncf.quantize`, or `nncf.quantize_with_accuracy_control` when quantize.accuracy_control is on),
  calibrated on quantize.calibration_samples real styles. Saved as OpenVINO IR (int8.xml + int8.bin).
* `onnxruntime`: ONNX Runtime's own `quantize_static` (QDQ, per-channel int8 weights, uint8 activations) with its
  own calibration (quantize.ort_calibration) over the same styles; no ranges are overridden.

Which ops stay float: NNCF quantizes every op its CPU hardware config allows (convolutions, the modulation and
mapping MatMuls, and the elementwise ops between them: the style multiplies, the Haar IDWT adds, DepthToSpace),
except the OpenVINO op types in quantize.float_ops. Low-precision elementwise ops are what makes the int8 model fast
at 1024² (its activations are large and every elementwise pass is memory-bound), and what costs fidelity. The inverse
Haar transforms (in the export a grouped 1x1 conv, four taps per output pixel, and a DepthToSpace) stay float in both
engines (`inverse_haar_convs`): nothing to gain from int8 kernels there, and quantizing their inputs cost accuracy
(teacher, 16 held-out latents: 24.92 vs 24.60 dB, and 71.1 vs 72.4 ms on a 2-core AVX-512 VNNI EPYC).

x86 CPUs without VNNI sum u8 x s8 products in saturating int16 pairs (VPMADDUBSW), which overflows for large
weights; `quantize.overflow_fix: enable` has NNCF quantize weights to 7 bits so no pair sum can overflow
(2 * 255 * 64 < 2^15) on any CPU; `first_layer` / `disable` are for models that only run on VNNI/AMX machines.
ONNX Runtime's equivalent is `reduce_range` (quantize.ort_reduce_range).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..models.mobilestylegan import latents_from_seeds
from ..runtimes.openvino_profile import CONV_TYPES
from .tail_quantiles import nncf_quantile_reducer

PSNR_CEILING_DB = 100.0
"""The accuracy-control validation metric is mean PSNR vs the fp32 images, each capped here: the fp32 model scores
exactly the ceiling (identical images), so quantize.min_psnr becomes NNCF's absolute max_drop = ceiling - min_psnr."""


def styles_inputs(seed: int, count: int, style_dim: int, truncation: float) -> list[dict[str, np.ndarray]]:
    """`count` latents from seeds seed .. seed + count - 1, each as the batch-1 input of an exported generator."""
    psi = np.asarray(truncation, dtype=np.float32)
    z = latents_from_seeds(range(seed, seed + count), style_dim).numpy()
    return [{"z": row[None], "truncation": psi} for row in z]


def openvino_model(float_onnx: str | Path):
    """The OpenVINO model of an exported generator, reshaped to batch 1 (NNCF calibrates and the int8 IR runs there)
    and constant-folded: the export's batch-size arithmetic reshapes every depthwise kernel at run time, and NNCF's
    fake-quantized weights behind such a reshape are not constants to OpenVINO, which then runs those convolutions in
    f32 (the student: 91.4 % instead of 94.1 % of the conv MACs in int8 kernels)."""
    import openvino as ov
    from openvino import passes

    model = ov.Core().read_model(str(float_onnx))
    model.reshape({"z": [1, model.input("z").get_partial_shape()[1].get_length()], "truncation": []})
    folding = passes.Manager()
    folding.register_pass(passes.ConstantFolding())
    folding.run_passes(model)
    return model


@contextlib.contextmanager
def _nncf_quiet():
    """NNCF logs every step at INFO through its own logger; keep its warnings, drop the chatter (restored after)."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _advanced(recipe: dict):
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,
                                                       OverflowFix)
    from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters,
                                                   RangeEstimatorParametersSet, StatisticsCollectorParameters,
                                                   StatisticsType)

    kw = {}
    if recipe["range_estimator"] in ("quantile", "mean_quantile"):
        # mean_quantile: NNCF's preset (with our tail probability; its own: 1e-4), the mean over images everywhere.
        # quantile: no aggregator given, so NNCF keeps its own per quantizer kind: the mean over images for per-tensor
        # quantizers, min / max over images for per-channel ones (the depthwise inputs, whose channel ranges vary
        # from latent to latent: a mean clips every latent above it; scripts/quantize_sensitivity.py shows it).
        aggregator = AggregatorType.MEAN if recipe["range_estimator"] == "mean_quantile" else None
        tail = StatisticsCollectorParameters(statistics_type=StatisticsType.QUANTILE, aggregator_type=aggregator,
                                             quantile_outlier_prob=recipe["range_quantile"])
        kw["activations_range_estimator_params"] = RangeEstimatorParameters(min=tail, max=tail)
    elif recipe["range_estimator"] != "default":
        kw["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet,
                                                           recipe["range_estimator"].upper())
    return AdvancedQuantizationParameters(
        overflow_fix={"enable": OverflowFix.ENABLE, "first_layer": OverflowFix.FIRST_LAYER,
                      "disable": OverflowFix.DISABLE}[recipe["overflow_fix"]],
        disable_channel_alignment=not recipe["channel_alignment"],
        smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=recipe["smooth_quant_alpha"], matmul=-1),
        **kw)


def _compute_ops_and_block_cuts(model) -> tuple[list, list[int]]:
    """The ops of an exported generator's OpenVINO graph in topological order (inputs, constants and outputs left
    out), and the positions of its DepthToSpace ops: every synthesis block starts with its IDWT upsampling, whose last
    op is a DepthToSpace, and the graph's last one is the head's inverse Haar transform or pixel shuffle."""
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in ("Parameter", "Constant", "Result")]
    return ops, [i for i, op in enumerate(ops) if op.get_type_name() == "DepthToSpace"]


def early_block_ops(model, blocks: int) -> list[str]:
    """Names of the ops that run before synthesis block `blocks` (the mapping network, conv1 and blocks 0 ..
    blocks - 1), in the OpenVINO graph of an exported generator: the cut is the (blocks + 1)-th DepthToSpace in
    topological order. These low-resolution blocks hold few of the MACs and most of the activation outliers that no
    calibrated range covers."""
    if blocks <= 0:
        return []
    ops, cuts = _compute_ops_and_block_cuts(model)
    end = cuts[blocks] if blocks < len(cuts) else len(ops)
    return [op.get_friendly_name() for op in ops[:end]]


def late_block_ops(model, blocks: int) -> list[str]:
    """Names of the ops of the last `blocks` synthesis blocks and of the output head after them, in the OpenVINO graph
    of an exported generator: from the DepthToSpace that ends the first of those blocks' IDWT upsampling to the
    output. At a model's native resolution their int8 steps are pixel noise that no downsampling averages away."""
    if blocks <= 0:
        return []
    ops, cuts = _compute_ops_and_block_cuts(model)
    return [op.get_friendly_name() for op in ops[cuts[max(0, len(cuts) - 1 - blocks)]:]]


def head_ops(model) -> list[str]:
    """Names of the output head's ops in the OpenVINO graph of an exported generator: the last Convolution (the
    head's 1x1 modulated conv to Haar coefficients or to pixel-shuffled RGB) and everything after it (the inverse Haar
    transform or pixel shuffle). Their activations are the image itself: int8 steps there are visible pixel noise."""
    ops, _ = _compute_ops_and_block_cuts(model)
    last = max(i for i, op in enumerate(ops) if op.get_type_name() == "Convolution")
    return [op.get_friendly_name() for op in ops[last:]]


def _inverse_haar(name: str, op_type: str) -> bool:
    return op_type in ("GroupConvolution", "Conv") and ("/idwt/" in name or "/to_rgb/" in name)


def inverse_haar_convs(model) -> list[str]:
    """Names of the grouped convolutions that compute the inverse Haar transforms (`wavelets`, channel-major) in an
    exported generator's OpenVINO model (an `openvino.Model`) or ONNX graph (an `onnx.ModelProto`)."""
    if hasattr(model, "graph"):
        return [n.name for n in model.graph.node if _inverse_haar(n.name, n.op_type)]
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if _inverse_haar(op.get_friendly_name(), op.get_type_name())]


def nncf_quantize(model, calibration: list[dict], recipe: dict,
                  validation: tuple[list[dict], list[np.ndarray]] | None = None, float_last_blocks: int = 0):
    """int8 OpenVINO model of the float OpenVINO `model` (static batch 1) by NNCF.

    recipe: the quantize params (preset, fast_bias_correction, smooth_quant_alpha, channel_alignment,
    range_estimator, range_quantile, minmax_tensor_blocks, overflow_fix, float_ops, float_blocks, float_head,
    accuracy_control, min_psnr);
    float_last_blocks: highest-resolution synthesis blocks (with the head) left float. With accuracy control,
    `validation` = (inputs, their fp32 images) scores a candidate by its per-latent PSNR against those images, and NNCF
    reverts the quantizers that cost the most until the mean reaches recipe["min_psnr"]."""
    import nncf

    types = sorted({op.get_type_name() for op in model.get_ops()} & set(recipe["float_ops"]))
    names = sorted(set(early_block_ops(model, recipe["float_blocks"]) + late_block_ops(model, float_last_blocks)
                       + (head_ops(model) if recipe["float_head"] else []) + inverse_haar_convs(model)))
    kw = dict(preset=nncf.QuantizationPreset(recipe["preset"]), subset_size=len(calibration),
              fast_bias_correction=recipe["fast_bias_correction"], advanced_parameters=_advanced(recipe),
              ignored_scope=nncf.IgnoredScope(types=types, names=names) if types or names else None)
    with _nncf_quiet(), nncf_quantile_reducer():
        if not recipe["accuracy_control"]:
            widened = set(early_block_ops(model, recipe["minmax_tensor_blocks"]))
            int8 = nncf.quantize(model, nncf.Dataset(calibration), **kw)     # NNCF leaves `model` as it was
            if widened:
                extremes = nncf.quantize(model, nncf.Dataset(calibration), **{
                    **kw, "advanced_parameters": _advanced({**recipe, "range_estimator": "mean_minmax"})})
                _take_tensor_ranges(int8, extremes, widened)
            return _int8_storage(int8)
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        def validate(compiled, pairs: Iterable) -> tuple[float, list[float]]:
            pairs = list(pairs)    # NNCF may pass a subset of the (inputs, fp32 image) items while ranking
            scores = [min(PSNR_CEILING_DB, s)
                      for s in psnr_per_image([compiled(x)[0] for x, _ in pairs], [r for _, r in pairs])]
            return float(np.mean(scores)), scores

        kw["advanced_quantization_parameters"] = kw.pop("advanced_parameters")
        return _int8_storage(nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(calibration), nncf.Dataset(list(zip(*validation)), lambda pair: pair[0]), validate,
            max_drop=PSNR_CEILING_DB - recipe["min_psnr"], drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(num_ranking_workers=1), **kw))


def activation_quantizers(model) -> list:
    """The FakeQuantize ops of an OpenVINO model that quantize activations (NNCF stores weights as int8 constants)."""
    return [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
            and op.input_value(0).get_node().get_type_name() != "Constant"]


def _take_tensor_ranges(int8, donor, producers: set[str]) -> None:
    """Give `int8`'s per-tensor activation quantizers behind the ops named in `producers` the ranges of `donor`'s
    quantizer of the same name (`donor`: NNCF's quantization of the same model with another range estimator). Done by
    hand because NNCF applies one range estimator to every activation quantizer of a model."""
    from openvino import opset13

    ranges = {op.get_friendly_name(): op for op in activation_quantizers(donor)}
    for op in activation_quantizers(int8):
        if op.input_value(0).get_node().get_friendly_name() in producers \
                and op.input_value(1).get_node().get_data().size == 1:
            for port in range(1, 5):       # input low / high, output low / high
                op.input(port).replace_source_output(
                    opset13.constant(ranges[op.get_friendly_name()].input_value(port).get_node().get_data()).output(0))


def _int8_storage(model):
    """The weights quantization left float (the MatMuls, the float blocks' convolutions) stored as int8 per output
    channel and dequantized at run time (`nncf.compress_weights`, INT8_SYM): weight-only int8, float compute, so the
    file is an int8 file (the mapping and modulation linears alone are 22 MB in fp32). The depthwise convolutions
    keep their fake-quantized weights (29 k parameters) so their overflow-fix levels stay as NNCF set them.

    The file also tells OpenVINO not to quantize the activations of those weight-compressed linears on the fly: its
    CPU plugin does that by default (DYNAMIC_QUANTIZATION_GROUP_SIZE 32) only where the CPU has VNNI or AMX, which
    quantized the style vectors of every modulation and cost the teacher's int8 0.8 dB held-out PSNR (24.49 instead
    of 25.33 dB on a 2-core AVX-512 VNNI EPYC, the AVX2 result). OpenVINO applies `runtime_options` of a model's
    rt_info at compile time, so whoever deploys the file gets the same int8 arithmetic on every x86 CPU."""
    import nncf

    model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM,
                                  ignored_scope=nncf.IgnoredScope(types=["GroupConvolution"], validate=False))
    model.set_rt_info("0", ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
    return model


class _CalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over a list of input dicts."""

    def __init__(self, inputs: list[dict]):
        self._items = iter(inputs)

    def get_next(self):
        return next(self._items, None)

    def rewind(self):
        raise NotImplementedError("one calibration pass")


def ort_calibration_bytes(model, samples: int) -> int:
    """Bytes that ONNX Runtime's entropy and percentile calibrators hold at once for `samples` calibration inputs of
    the OpenVINO `model` (static batch 1): they keep every convolution's float32 input and output of every sample
    until the last has run (its min-max calibrator adds ReduceMin / ReduceMax to the graph and keeps only those).
    The 1024² teacher: 0.8 GiB per sample."""
    seen, per_sample = set(), 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in CONV_TYPES:
            for port in (op.input_value(0), op.output(0)):
                key = (port.get_node().get_friendly_name(), port.get_index())
                if key not in seen:
                    seen.add(key)
                    per_sample += 4 * int(np.prod(list(port.get_shape())))
    return per_sample * samples


def ort_quantize(float_onnx: str | Path, out: str | Path, calibration: list[dict], recipe: dict) -> None:
    """int8 QDQ ONNX of `float_onnx` by ONNX Runtime's static quantizer, calibrated on `calibration` (convs only: its
    elementwise int8 kernels are slower than float on CPU)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[recipe["ort_calibration"]]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=inverse_haar_convs(onnx.load(str(prepared))),
                        per_channel=True, reduce_range=recipe["ort_reduce_range"],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                        calibration_providers=["CPUExecutionProvider"],
                        extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False})


def psnr_per_image(images: Iterable[np.ndarray], reference: Iterable[np.ndarray]) -> list[float]:
    """PSNR in dB of each image against its reference (both clamped to the nominal [-1, 1], peak-to-peak 2)."""
    from ..imaging import psnr

    return psnr(torch.from_numpy(np.concatenate(list(images))), torch.from_numpy(np.concatenate(list(reference)))).tolist()
