"""Where the int8 model's error comes from: for each activation quantizer (FakeQuantize) of stage quantize's OpenVINO
int8 IR, the image PSNR against fp32 with that quantizer alone active (every other activation quantizer bypassed, the
int8 weights kept) and with it alone bypassed, and its own signal-to-noise ratio split into the clipping error and
the rounding error of its range. A benchmark (scripts/quantize_sensitivity.py), not a DVC stage; it uses the
quantize.validation_* latents (no fidelity latent: this is what a recipe search looks at) and writes
reports/benchmarks/quantize_sensitivity{,_student}.{csv,md}.

Written here because NNCF's accuracy control ranks quantizers only to revert them and reports no ranking, and
neither NNCF nor OpenVINO splits a quantizer's error into clipping and rounding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..compress import quantize as q
from ..config import read_yaml, validate
from ..io.atomic import write_text
from ..io.tables import csv_text
from ..metrics.latency import cpu_info
from ..paths import Paths
from ..runtimes.onnx import compile_openvino
from .quantize_tradeoff import require_quantize_outputs

COLUMNS = ["quantizer", "ranges", "consumer", "psnr_db_alone", "psnr_db_without", "sqnr_db_clipping",
           "sqnr_db_rounding"]


def with_active_quantizers(xml: Path, active: set[str]):
    """The int8 IR with every activation quantizer not named in `active` bypassed (its input passed through)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    for op in q.activation_quantizers(model):
        if op.get_friendly_name() not in active:
            op.output(0).replace(op.input_value(0))
    return model


def _mean_psnr(model, inputs: list[dict], reference: list[np.ndarray], threads: int | None) -> float:
    compiled = compile_openvino(model, threads=threads)
    return float(np.mean(q.psnr_per_image([compiled(x)[0] for x in inputs], reference)))


def _sqnr_db(signal: float, noise: float) -> float:
    return float(10 * np.log10(signal / noise)) if noise > 0 else float("inf")


def fake_quantize(a: np.ndarray, low: np.ndarray, high: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenVINO's FakeQuantize (input range = output range) in two steps: `a` clipped to [low, high] (broadcast per
    tensor or per channel), then rounded to `levels` levels."""
    low, high = low.astype(np.float64), high.astype(np.float64)
    clipped = np.clip(a, low, high)
    step = (high - low) / (levels - 1)
    return clipped, np.round((clipped - low) / step) * step + low


def clipping_and_rounding(xml: Path, inputs: list[dict], threads: int | None) -> dict[str, tuple[float, float]]:
    """Each activation quantizer's SQNR (dB) of its clipping alone and of its rounding alone, on `inputs`: the
    quantizer's input as the int8 model computes it, clipped to its range, then rounded to its levels."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    quantizers = q.activation_quantizers(model)
    first = len(model.outputs)
    model.add_outputs([op.input_value(0) for op in quantizers])
    compiled = compile_openvino(model, threads=threads)
    totals = np.zeros((len(quantizers), 3))                       # signal, clipping error, rounding error
    for x in inputs:
        result = compiled(x)
        for i, op in enumerate(quantizers):
            a = result[first + i].astype(np.float64)
            clipped, rounded = fake_quantize(a, *(op.input_value(k).get_node().get_data() for k in (1, 2)),
                                             op.get_levels())
            totals[i] += [np.mean(a ** 2), np.mean((clipped - a) ** 2), np.mean((rounded - clipped) ** 2)]
    return {op.get_friendly_name(): (_sqnr_db(s, c), _sqnr_db(s, r)) for op, (s, c, r) in zip(quantizers, totals)}


def _markdown(rows: list[dict], summary: dict, cpu: dict, n: int, xml: Path) -> str:
    isa = ", ".join(sorted(k for k, v in cpu.get("isa", {}).items() if v)) or "unknown"
    lines = ["# Where the int8 error comes from (OpenVINO int8 IR, one activation quantizer at a time)", "",
             f"Model: {xml}. PSNR: int8 vs float.onnx on OpenVINO fp32, mean over {n} validation latents at full "
             f"resolution. CPU: {cpu.get('model_name')} (ISA: {isa}).", "",
             f"- every activation quantizer active (the int8 model): {summary['all']:.2f} dB",
             f"- none active (int8 weights only, float activations): {summary['none']:.2f} dB", "",
             "| quantizer | ranges | consumer | PSNR alone dB | PSNR without it dB | SQNR clipping dB | "
             "SQNR rounding dB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['quantizer']} | {r['ranges']} | {r['consumer']} | {r['psnr_db_alone']:.2f} | "
                     f"{r['psnr_db_without']:.2f} | {r['sqnr_db_clipping']:.1f} | {r['sqnr_db_rounding']:.1f} |")
    return "\n".join(lines) + "\n"


def run_quantize_sensitivity(params_path: str | Path = "params.yaml", root: str | Path = ".",
                             threads: int | None = None, source: str = "operating_point") -> list[dict]:
    paths = Paths(Path(root))
    p = validate(read_yaml(params_path), ["quantize"], str(params_path))["quantize"]
    float_onnx, xml = paths.float_onnx(source), paths.int8_model("openvino", source)
    require_quantize_outputs(paths, source, float_onnx, xml)
    fp32 = compile_openvino(q.openvino_model(float_onnx), threads=threads)
    style_dim = fp32.input("z").get_partial_shape()[1].get_length()
    inputs = q.styles_inputs(p["validation_seed"], p["validation_samples"], style_dim, p["truncation"])
    reference = [fp32(x)[0] for x in inputs]

    import openvino as ov

    model = ov.Core().read_model(str(xml))        # Kept referenced: its ops' consumers are read below.
    quantizers = q.activation_quantizers(model)
    names = [op.get_friendly_name() for op in quantizers]
    errors = clipping_and_rounding(xml, inputs, threads)
    summary = {"all": _mean_psnr(model, inputs, reference, threads),
               "none": _mean_psnr(with_active_quantizers(xml, set()), inputs, reference, threads)}
    rows = []
    for i, (op, name) in enumerate(zip(quantizers, names)):
        print(f"[{i + 1}/{len(names)}] {name}", flush=True)
        consumers = sorted({t.get_node().get_type_name() for t in op.output(0).get_target_inputs()})
        ranges = op.input_value(1).get_node().get_data().size
        rows.append({"quantizer": name, "ranges": "per-channel" if ranges > 1 else "per-tensor",
                     "consumer": "/".join(consumers),
                     "psnr_db_alone": _mean_psnr(with_active_quantizers(xml, {name}), inputs, reference, threads),
                     "psnr_db_without": _mean_psnr(with_active_quantizers(xml, set(names) - {name}), inputs,
                                                   reference, threads),
                     "sqnr_db_clipping": errors[name][0], "sqnr_db_rounding": errors[name][1]})
    suffix = "_student" if source == "student" else ""
    out = paths.reports / "benchmarks"
    write_text(out / f"quantize_sensitivity{suffix}.csv", csv_text(rows, COLUMNS))
    write_text(out / f"quantize_sensitivity{suffix}.md", _markdown(rows, summary, cpu_info(), len(inputs), xml))
    return rows
