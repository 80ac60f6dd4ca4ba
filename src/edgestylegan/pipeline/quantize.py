"""Stages quantize and quantize_student: static int8 post-training quantization of a float generator.

source "operating_point" (stage quantize): prune.amount (0 = the dense prune.base, else models/pruned/<amount>);
source "student" (stage quantize_student): models/student.safetensors. Outputs, all written only after everything
succeeded (and the quantize.engine file reached quantize.min_psnr on the held-out latents):

* models/quantized{,_student}/float.onnx          the fp32 source exported to ONNX (channel-major packing), its
                                                  style -> depthwise -> pointwise chains equalized (quantize.cle_alpha)
* models/quantized{,_student}/int8.xml, int8.bin  NNCF int8 OpenVINO IR (engine openvino)
* models/quantized{,_student}/int8.onnx           ONNX Runtime static QDQ int8 (engine onnxruntime)
* metrics/quantize{,_student}.json                `artifacts.quantize.QuantizeRecord`
* reports/quantize{,_student}/layers.csv          per executed OpenVINO node (fp32 and int8): kernel, precision, time
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..artifacts.quantize import ENGINE_RUNTIMES, QuantizeRecord
from ..compress import quantize as q
from ..compress.equalize import equalize_generator
from ..config import load_params
from ..errors import UserError
from ..io.atomic import atomic_directory, write_text
from ..io.tables import csv_text
from ..metrics.latency import cpu_info
from ..models.mobilestylegan import Generator
from ..paths import Paths
from ..runtimes import openvino_profile
from ..runtimes.parity import OPENVINO_F32, decide, max_abs_difference
from ..runtimes.onnx import (OnnxRuntimeGenerator, OpenVINOOnnxGenerator, export_onnx, save_openvino_ir,
                             stamp_onnx_metadata)
from .loaders import SOURCES, load_model, source_model

RECIPE_KEYS = ("calibration_samples", "calibration_seed", "truncation", "preset", "fast_bias_correction",
               "smooth_quant_alpha", "channel_alignment", "cle_alpha", "range_estimator", "range_quantile",
               "minmax_tensor_blocks", "overflow_fix", "float_ops", "float_blocks", "float_head", "accuracy_control",
               "validation_samples", "validation_seed", "ort_calibration", "ort_reduce_range", "fidelity_seed",
               "fidelity_samples")


def float_last_blocks(quantize: dict, source: str, prune: dict) -> int:
    """The highest-resolution synthesis blocks NNCF leaves float: quantize.student_float_last_blocks for the student
    (stage quantize_student, or an operating point of prune.base = student), none for the teacher (its int8 share
    is the study's target)."""
    student = source == "student" or prune["base"] == "student"     # (stage quantize_student reads no prune key)
    return quantize["student_float_last_blocks"] if student else 0


def check_engine_fidelity(record: QuantizeRecord) -> None:
    """Warn (stderr) for every runtime whose int8 PSNR misses the target; fail when the quantize.engine file does,
    since that file is the `int8` variant everywhere downstream."""
    target = record.psnr_target_db
    for key, met in record.psnr_meets_target.items():
        if not met:
            print(f"warning: int8-vs-fp32 PSNR on {key} is {_db(record.psnr_db[key])} (mean of "
                  f"{record.num_fidelity_latents} held-out latents), below quantize.min_psnr = {target} dB",
                  file=sys.stderr)
    if not record.psnr_meets_target[ENGINE_RUNTIMES[record.engine]]:
        raise UserError(f"quantize.engine = {record.engine}: its int8 model's mean PSNR vs fp32 on "
                        f"{record.num_fidelity_latents} held-out latents is {_db(record.engine_psnr(record.engine))}, "
                        f"below quantize.min_psnr = {target} dB; keep more of the network float "
                        f"(quantize.float_blocks, quantize.float_head, quantize.float_ops), clip less (a smaller "
                        f"quantize.range_quantile, more quantize.minmax_tensor_blocks), turn on quantize.accuracy_control, or lower quantize.min_psnr")


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where the system has no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_ort_calibration_memory(needed: int, quantize: dict, available: int | None) -> None:
    """Fail before minutes of NNCF calibration, not by the kernel's OOM kill after them, when ONNX Runtime's
    histogram calibration (quantize.ort_calibration entropy / percentile) would not fit in memory."""
    if available is not None and needed > 0.8 * available:
        raise UserError(f"quantize.ort_calibration = {quantize['ort_calibration']} keeps every conv activation of "
                        f"the {quantize['calibration_samples']} calibration samples in memory (~{needed / 2**30:.1f} "
                        f"GiB, {available / 2**30:.1f} GiB available): use ort_calibration minmax, or fewer "
                        f"quantize.calibration_samples")


def _db(value: float | None) -> str:
    return "a non-finite value" if value is None else f"{value:.2f} dB"


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


FP32_REFERENCE_TOLERANCE = 2e-3
"""Max |OpenVINO f32 - PyTorch| on the first held-out image for float.onnx on OpenVINO to be the fp32 reference (a
quarter of one uint8 level; the same bound as eval.parity_tolerance's default)."""


def _fp32_images(float_onnx: Path, gen: Generator, inputs: list[dict], truncation: float,
                 threads: int | None) -> tuple[list[np.ndarray], dict]:
    """The fp32 image of each exported-generator input, the reference every int8 PSNR is against, and the parity
    record of how it was made: float.onnx on OpenVINO f32 (4x PyTorch at 1024² on two cores; the rest as one batch)
    once it matched the PyTorch source on the first input (`runtimes.parity`, policy auto), else the PyTorch source
    itself."""
    runner = OpenVINOOnnxGenerator(float_onnx, threads)
    first = runner.run_numpy(inputs[0]["z"], truncation)
    with torch.no_grad():
        expected = gen(torch.from_numpy(inputs[0]["z"]), truncation)
    parity = decide("fp32 reference of the int8 PSNR", "auto", OPENVINO_F32, "pytorch",
                    max_abs_difference(torch.from_numpy(first), expected), FP32_REFERENCE_TOLERANCE,
                    knob="none (chosen automatically)")
    if parity.runtime != OPENVINO_F32:
        with torch.no_grad():
            return [gen(torch.from_numpy(x["z"]), truncation).numpy() for x in inputs], parity.to_dict()
    rest = runner.run_numpy(np.concatenate([x["z"] for x in inputs[1:]]), truncation) if len(inputs) > 1 else []
    return [first] + [image[None] for image in rest], parity.to_dict()


LAYER_FIELDS = ["model", "node", "layer_type", "kernel", "precision", "time_ms", "conv_macs"]


def _layers_csv(profiles: dict[str, list[dict]]) -> str:
    return csv_text([{"model": model, **row} for model, rows in profiles.items() for row in rows], LAYER_FIELDS)


def run_quantize(source: str = "operating_point", params_path: str | Path = "params.yaml", root: str | Path = ".",
                 threads: int = 0) -> QuantizeRecord:
    """threads: torch / ONNX Runtime / OpenVINO threads (0: the libraries' default)."""
    paths = Paths(Path(root))
    params = load_params(params_path, ["prune", "quantize"])
    p = params["quantize"]
    src, operating_point = source_model(source, params["prune"], paths)
    gen = load_model(src)
    if not isinstance(gen, Generator):
        raise UserError(f"{src} is not a float generator (got {type(gen).__name__}); quantize a dense or pruned model")
    if threads:
        torch.set_num_threads(threads)
    dim, psi = gen.style_dim, p["truncation"]
    calibration = q.styles_inputs(p["calibration_seed"], p["calibration_samples"], dim, psi)
    seconds = {}
    if p["cle_alpha"] >= 0:
        start = time.perf_counter()
        z = torch.from_numpy(np.concatenate([x["z"] for x in calibration]))
        gen = equalize_generator(gen, z, p["cle_alpha"], truncation=psi)
        seconds["equalize"] = time.perf_counter() - start
    held_out = q.styles_inputs(p["fidelity_seed"], p["fidelity_samples"], dim, psi)

    last_float = float_last_blocks(p, source, params["prune"])
    info = {"source": os.path.relpath(src, paths.root), **operating_point}
    runtime_threads = threads or None
    with atomic_directory(paths.quantized_dir(source)) as tmp:
        float_onnx = export_onnx(gen, tmp / paths.float_onnx(source).name, info=info)
        validation_inputs = (q.styles_inputs(p["validation_seed"], p["validation_samples"], dim, psi)
                             if p["accuracy_control"] else [])
        images, reference_parity = _fp32_images(float_onnx, gen, held_out + validation_inputs, psi, runtime_threads)
        reference = images[:len(held_out)]
        validation = (validation_inputs, images[len(held_out):]) if validation_inputs else None
        int8_xml, int8_onnx = (tmp / paths.int8_model(e, source).name for e in ("openvino", "onnxruntime"))

        start = time.perf_counter()
        fp32 = q.openvino_model(float_onnx)
        if p["ort_calibration"] != "minmax":
            check_ort_calibration_memory(q.ort_calibration_bytes(fp32, len(calibration)), p, available_memory())
        save_openvino_ir(q.nncf_quantize(fp32, calibration, p, validation, last_float), int8_xml,
                         gen.config, "int8",
                         {**info, "engine": "openvino"})
        seconds["openvino"] = time.perf_counter() - start

        start = time.perf_counter()
        q.ort_quantize(float_onnx, int8_onnx, calibration, p)
        stamp_onnx_metadata(int8_onnx, gen.config, "int8", {**info, "engine": "onnxruntime"})
        seconds["onnxruntime"] = time.perf_counter() - start

        runners = {"openvino_int8": OpenVINOOnnxGenerator(int8_xml, runtime_threads),
                   "onnxruntime_int8": OnnxRuntimeGenerator(int8_onnx, runtime_threads)}
        fidelity = {k: q.psnr_per_image([run.run_numpy(x["z"], psi) for x in held_out], reference)
                    for k, run in runners.items()}
        profiles = {name: openvino_profile.profile(path, held_out[0], threads=runtime_threads)
                    for name, path in (("fp32", float_onnx), ("int8", int8_xml))}
        mean = {k: _finite(np.mean(v)) for k, v in fidelity.items()}
        record = QuantizeRecord(
            operating_point=operating_point, engine=p["engine"],
            recipe={**{k: p[k] for k in RECIPE_KEYS}, "float_last_blocks": last_float},
            psnr_db=mean, psnr_db_min={k: _finite(np.min(v)) for k, v in fidelity.items()},
            psnr_db_per_latent={k: [_finite(x) for x in v] for k, v in fidelity.items()},
            psnr_target_db=p["min_psnr"],
            psnr_meets_target={k: int(v is not None and v >= p["min_psnr"]) for k, v in mean.items()},
            num_fidelity_latents=len(held_out), fp32_reference=reference_parity,
            openvino_profile={k: openvino_profile.summary(rows) for k, rows in profiles.items()},
            quantize_seconds=seconds, cpu=cpu_info())
        check_engine_fidelity(record)

    write_text(paths.quantize_layers(source), _layers_csv(profiles))
    record.write(paths.quantize_metrics(source))
    return record
