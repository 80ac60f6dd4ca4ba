"""Stages quantize and quantize_student: static int8 post-training quantization of a float generator.

source "operating_point" (stage quantize): prune.amount (0 = the dense prune.base, else models/pruned/<amount>);
source "student" (stage quantize_student): models/student.safetensors. Outputs, all written only after everything
succeeded (and the quantize.engine file reached quantize.min_psnr):

* models/quantized{,_student}/float.onnx              the fp32 source exported to ONNX
* models/quantized{,_student}/int8.onnx               ONNX Runtime static QDQ int8 (engine onnxruntime; OpenVINO too)
* models/quantized{,_student}/int8_torch.safetensors  eager PyTorch int8 (engine torch, quantize.backend kernels)
* metrics/quantize{,_student}.json                    `artifacts.quantize.QuantizeRecord`
* reports/quantize{,_student}/sites.csv, record.json  per-site table; calibration, ranges, search, module precisions
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ..artifacts.quantize import ENGINE_RUNTIMES, QuantizeRecord
from ..compress import quantize as q
from ..config import load_params
from ..imaging import psnr
from ..errors import UserError
from ..io.atomic import atomic_directory, write_json, write_text
from ..models.mobilestylegan import Generator
from ..paths import Paths
from ..runtimes.onnx import OnnxRuntimeGenerator, OpenVINOOnnxGenerator, export_onnx
from .loaders import load_model

SOURCES = ("operating_point", "student")


def source_model(source: str, prune: dict, paths: Paths) -> tuple[Path, dict]:
    """-> (float model file, the record's operating_point) of `source`; a UserError naming the stage to run if the
    file is missing."""
    if source not in SOURCES:
        raise UserError(f"--source {source!r}: choose one of {SOURCES}")
    if source == "student":
        path, operating_point, producer = paths.student_model, {}, "distill"
    else:
        amount = prune["amount"]
        path = paths.base_model(prune["base"]) if amount == 0 else paths.pruned_model(amount)
        operating_point = {"prune_amount": amount}
        producer = "prune" if amount else ("fetch_teacher" if prune["base"] == "teacher" else "distill")
    if not path.is_file():
        what = "the student" if source == "student" else f"prune.amount = {prune['amount']}"
        raise UserError(f"{what} needs {path}; run `dvc repro {producer}` first")
    return path, operating_point


def check_engine_fidelity(record: QuantizeRecord, engine: str) -> None:
    """Warn (stderr) for every runtime whose int8 PSNR misses the target; fail when the quantize.engine file does on
    its own runtime, since that file is the `int8` variant everywhere downstream."""
    target = record.psnr_target_db
    for key, met in record.psnr_meets_target.items():
        if not met:
            print(f"warning: int8-vs-fp32 PSNR on {key} is {_db(record.psnr_db[key])}, below quantize.min_psnr = "
                  f"{target} dB", file=sys.stderr)
    key = ENGINE_RUNTIMES[engine][0]
    if not record.psnr_meets_target[key]:
        raise UserError(f"quantize.engine = {engine}: its int8 model's PSNR vs fp32 on {key} is "
                        f"{_db(record.engine_psnr(engine))}, below quantize.min_psnr = {target} dB; keep more sites float "
                        f"(quantize.keep_float), store the float sites' weights as fp16 (quantize.float_weights), or "
                        f"lower quantize.min_psnr")


def _db(value: float | None) -> str:
    return "a non-finite value" if value is None else f"{value:.2f} dB"


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
    sites = list(q.conv_sites(gen))
    unknown = [s for s in p["keep_float"] if s not in sites]
    if unknown:
        raise UserError(f"quantize.keep_float: unknown site(s) {unknown}; this model's sites are {sites}")
    if threads:
        torch.set_num_threads(threads)

    cal = q.calibrate(gen, p["calibration_samples"], p["calibration_seed"], p["truncation"])
    ranges = cal.engine_ranges(p["calibration"], p["backend"])
    z = q.latents(p["fidelity_seeds"], gen.config.style_dim)
    reference = q.images_of(gen, z, p["truncation"])
    macs = q.site_macs(gen)
    fw = p["float_weights"]
    sim = q.FakeQuantSimulator(gen, ranges["onnxruntime"], q.QMAX["onnxruntime"], z, p["truncation"], reference, fw)
    search = q.select_float_sites(sim, p["min_psnr"], p["keep_float"], macs)
    float_sites = search["float_sites"]
    int8_sites = [s for s in sites if s not in float_sites]
    print(f"quantize: all-int8 simulated PSNR {search['all_int8_psnr']:.2f} dB; {len(float_sites)} of {len(sites)} "
          f"conv sites kept float for >= {p['min_psnr']} dB: {float_sites}")
    if not search["target_met"]:
        print(f"warning: quantize.min_psnr = {p['min_psnr']} dB is not reachable even with every conv float "
              f"(simulated {search['psnr']:.2f} dB: weight storage alone); try quantize.float_weights: fp16",
              file=sys.stderr)

    info = {"source": os.path.relpath(src, paths.root), **operating_point, "calibration_samples":
            p["calibration_samples"], "calibration_seed": p["calibration_seed"], "calibration": p["calibration"],
            "float_sites": float_sites, "float_weights": fw}
    runtime_threads = threads or None
    with atomic_directory(paths.quantized_dir(source)) as tmp:
        float_onnx = tmp / paths.float_onnx(source).name
        int8_onnx, int8_torch = (tmp / paths.int8_model(e, source).name for e in ("onnxruntime", "torch"))
        export_onnx(gen, float_onnx, info=info)
        onnx_record = q.build_onnx_int8(float_onnx, int8_onnx, gen, ranges["onnxruntime"], int8_sites, z.numpy(),
                                        {**info, "engine": "onnxruntime"}, fw)
        q.save_torch_int8(gen, ranges["torch"], int8_sites, p["backend"], int8_torch, {**info, "engine": "torch"}, fw)
        runtimes = {"onnxruntime_int8": lambda: OnnxRuntimeGenerator(int8_onnx, runtime_threads),
                    "openvino_int8": lambda: OpenVINOOnnxGenerator(int8_onnx, runtime_threads),
                    "torch_int8": lambda: q.load_torch_int8(int8_torch)}
        fidelity = {k: psnr(q.images_of(load(), z, p["truncation"]), reference) for k, load in runtimes.items()}
        all_int8 = {}
        if float_sites:   # the trade-off's other end, measured on the deployable engine
            scratch = tmp / "all_int8.onnx"
            q.build_onnx_int8(float_onnx, scratch, gen, ranges["onnxruntime"], sites, z.numpy(), float_weights=fw)
            all_int8 = {"onnxruntime_int8_psnr_db": q.finite_or_none(psnr(q.images_of(
                OnnxRuntimeGenerator(scratch, runtime_threads), z, p["truncation"]), reference).mean()),
                "int8_onnx_bytes": scratch.stat().st_size}
            scratch.unlink()
        mean = {k: q.finite_or_none(v.mean()) for k, v in fidelity.items()}
        int8_macs = sum(macs[s] for s in int8_sites)
        record = QuantizeRecord(
            operating_point=operating_point,
            psnr_db=mean,
            psnr_db_min={k: q.finite_or_none(v.min()) for k, v in fidelity.items()},
            psnr_target_db=p["min_psnr"],
            psnr_meets_target={k: int(v is not None and v >= p["min_psnr"]) for k, v in mean.items()},
            simulated_psnr_db={"chosen": q.finite_or_none(search["psnr"]),
                               "all_int8": q.finite_or_none(search["all_int8_psnr"])},
            all_int8=all_int8,
            sites={"total": len(sites), "int8": len(int8_sites), "float": len(float_sites),
                   "int8_mac_fraction": int8_macs / max(sum(macs.values()), 1)},
            tradeoff_simulated_psnr_db={f"float_sites_{k}": q.finite_or_none(v)
                                        for k, v in sorted(search["curve"].items())},
            num_fidelity_latents=len(p["fidelity_seeds"]),
        )
        check_engine_fidelity(record, p["engine"])

    write_text(paths.quantize_sites(source), q.sites_csv(gen, float_sites, search, macs, fw))
    write_json(paths.quantize_record(source), q.quantization_record(gen, cal, p["calibration"], p["backend"], ranges,
                                                                   search, int8_sites, fw, onnx_record))
    record.write(paths.quantize_metrics(source))
    return record
