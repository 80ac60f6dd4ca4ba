"""DVC stages quantize and quantize_student: static int8 post-training quantization of a float generator.

    python stages/quantize.py                       # the operating point prune.amount (0 = the dense prune.base)
    python stages/quantize.py --source models/student.safetensors --out models/quantized_student \
        --metrics metrics/quantize_student.json --reports reports/quantize_student

Outputs (all written only after everything succeeded):
* models/quantized/float.onnx           the fp32 operating point exported to ONNX (deployable float, ORT/OpenVINO)
* models/quantized/int8.onnx            ONNX Runtime static QDQ int8 model (engine onnxruntime; runs on OpenVINO too)
* models/quantized/int8_torch.safetensors  eager PyTorch int8 model (engine torch, quantize.backend kernels)
* metrics/quantize.json                 int8-vs-fp32 PSNR per engine, sites in int8, bytes, the fidelity trade-off
* reports/quantize/sites.csv            per conv site: kind, MACs, int8 or float, single-site sensitivity
* reports/quantize/record.json          calibration record, chosen ranges, search curve, per-module precision
"""
import argparse
import csv
import io
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from edgestylegan.errors import UserError
from edgestylegan.cli import entry_point
from edgestylegan.compress import quantize as q
from edgestylegan.runtimes.onnx import OnnxRuntimeGenerator, OpenVINOOnnxGenerator, export_onnx
from edgestylegan.io.atomic import write_json, write_text
from edgestylegan.pipeline.loaders import load_model
from edgestylegan.models.mobilestylegan import Generator
from edgestylegan.config import load_params

QUANTIZED_DIR = "models/quantized"
FILES = {"onnxruntime": "int8.onnx", "torch": "int8_torch.safetensors", "float": "float.onnx"}


def operating_point_path(prune: dict, models: str = "models") -> Path:
    if prune["amount"] == 0:
        return Path(models) / f"{prune['base']}.safetensors"
    return Path(models) / "pruned" / f"{float(prune['amount'])}.safetensors"


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e9   # "all float" has infinite PSNR; JSON has no inf


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", default=QUANTIZED_DIR)
    parser.add_argument("--metrics", default="metrics/quantize.json")
    parser.add_argument("--reports", default="reports/quantize")
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT threads (0: library default)")
    parser.add_argument("--source", help="quantize this float model instead of the prune.amount operating point")
    args = parser.parse_args()
    params = load_params(args.params, ["prune", "quantize"])
    p, pr = params["quantize"], params["prune"]
    if args.source:
        src = Path(args.source)
        if not src.is_file():
            raise UserError(f"--source {src} not found; run the stage that writes it (`dvc repro distill` for the "
                            f"student)")
        operating_point = {"source": str(src)}
    else:
        src = operating_point_path(pr, args.models)
        if not src.is_file():
            raise UserError(f"prune.amount = {pr['amount']} needs {src}; run `dvc repro "
                            f"{'prune' if pr['amount'] else 'fetch_teacher'}` first")
        operating_point = {"prune_amount": pr["amount"]}
    gen = load_model(src)
    if not isinstance(gen, Generator):
        raise UserError(f"{src} is not a float generator (got {type(gen).__name__}); quantize a dense or pruned model")
    sites = list(q.conv_sites(gen))
    unknown = [s for s in p["keep_float"] if s not in sites]
    if unknown:
        raise UserError(f"quantize.keep_float: unknown site(s) {unknown}; this model's sites are {sites}")
    if args.threads:
        torch.set_num_threads(args.threads)

    cal = q.calibrate(gen, p["calibration_samples"], p["calibration_seed"], p["truncation"])
    ranges = {"onnxruntime": cal.ranges(p["calibration"], q.QMAX["onnxruntime"]),
              "torch": cal.ranges(p["calibration"], q.QMAX[p["backend"]])}
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
              f"(simulated {search['psnr']:.2f} dB: weight storage alone); try quantize.float_weights: fp16")

    info = {"source": str(src), **operating_point, "calibration_samples": p["calibration_samples"],
            "calibration_seed": p["calibration_seed"], "calibration": p["calibration"], "float_sites": float_sites,
            "float_weights": fw}
    out_dir = Path(args.out)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        export_onnx(gen, tmp / FILES["float"], info=info)
        onnx_record = q.build_onnx_int8(tmp / FILES["float"], tmp / FILES["onnxruntime"], gen, ranges["onnxruntime"],
                                        int8_sites, z.numpy(), {**info, "engine": "onnxruntime"}, fw)
        q.save_torch_int8(gen, ranges["torch"], int8_sites, p["backend"], tmp / FILES["torch"],
                          {**info, "engine": "torch"}, fw)
        threads = args.threads or None
        fidelity = {
            "onnxruntime_int8": q.psnr(q.images_of(OnnxRuntimeGenerator(tmp / FILES["onnxruntime"], threads), z,
                                                   p["truncation"]), reference),
            "openvino_int8": q.psnr(q.images_of(OpenVINOOnnxGenerator(tmp / FILES["onnxruntime"], threads), z,
                                                p["truncation"]), reference),
            "torch_int8": q.psnr(q.images_of(q.load_torch_int8(tmp / FILES["torch"]), z, p["truncation"]), reference),
        }
        all_int8 = {}
        if float_sites:   # the trade-off's other end, measured on the deployable engine
            q.build_onnx_int8(tmp / FILES["float"], tmp / "all_int8.onnx", gen, ranges["onnxruntime"], sites,
                              z.numpy(), float_weights=fw)
            all_int8 = {"onnxruntime_int8_psnr_db": float(q.psnr(q.images_of(
                OnnxRuntimeGenerator(tmp / "all_int8.onnx", threads), z, p["truncation"]), reference).mean()),
                "int8_onnx_bytes": (tmp / "all_int8.onnx").stat().st_size}
            (tmp / "all_int8.onnx").unlink()
        sizes = {k: (tmp / f).stat().st_size for k, f in FILES.items()}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    teacher_bytes = (Path(args.models) / "teacher.safetensors").stat().st_size \
        if (Path(args.models) / "teacher.safetensors").is_file() else src.stat().st_size
    int8_macs = sum(macs[s] for s in int8_sites)
    metrics = {
        "operating_point": {k: v for k, v in operating_point.items() if k != "source"},   # Numbers only (DVC).
        "psnr_db": {k: float(v.mean()) for k, v in fidelity.items()},
        "psnr_db_min": {k: float(v.min()) for k, v in fidelity.items()},
        "psnr_target_db": p["min_psnr"],
        "psnr_meets_target": {k: int(float(v.mean()) >= p["min_psnr"]) for k, v in fidelity.items()},
        "simulated_psnr_db": {"chosen": _finite(search["psnr"]), "all_int8": search["all_int8_psnr"]},
        "all_int8": all_int8,
        "sites": {"total": len(sites), "int8": len(int8_sites), "float": len(float_sites),
                  "int8_mac_fraction": int8_macs / max(sum(macs.values()), 1)},
        "bytes": {"source_model": src.stat().st_size, "dense_fp32_teacher": teacher_bytes,
                  "float_onnx": sizes["float"], "int8_onnx": sizes["onnxruntime"], "int8_torch": sizes["torch"],
                  "int8_onnx_over_teacher": sizes["onnxruntime"] / teacher_bytes,
                  "int8_torch_over_teacher": sizes["torch"] / teacher_bytes},
        "tradeoff_simulated_psnr_db": {f"float_sites_{k}": _finite(v) for k, v in sorted(search["curve"].items())},
        "num_fidelity_latents": len(p["fidelity_seeds"]),
    }
    table = q.site_table(gen, float_sites, search, macs)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["site", "kind", "precision", "macs", "single_site_int8_psnr_db", "float_rank"])
    for site, row in table.items():
        rank = search["order"].index(site) + 1 if site in search["order"] else ""
        writer.writerow([site, row["kind"], "int8" if row["int8"] else f"float ({fw} weights)", row["macs"],
                         "" if math.isnan(row["sensitivity_psnr"]) else f"{row['sensitivity_psnr']:.2f}", rank])
    record = {"calibration": cal.record(), "calibration_method": p["calibration"], "backend": p["backend"],
              "ranges": {e: {f"{s}.{pt}": list(v) for s, pts in r.items() for pt, v in pts.items()}
                         for e, r in ranges.items()},
              "search": {"order": search["order"], "sensitivity_psnr_db": search["sensitivity_psnr"],
                         "curve_simulated_psnr_db": {str(k): _finite(v) for k, v in search["curve"].items()},
                         "float_sites": float_sites},
              "modules": q.module_precisions(gen, int8_sites, fw), "onnx": onnx_record}

    # Commit: swap the model folder in, then the small files.
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    write_text(Path(args.reports) / "sites.csv", buf.getvalue())
    write_json(Path(args.reports) / "record.json", record)
    write_json(args.metrics, metrics)
    print("quantize: PSNR int8 vs fp32 " + ", ".join(f"{k} {v:.2f} dB" for k, v in metrics["psnr_db"].items())
          + f"; int8.onnx {sizes['onnxruntime'] / 1e6:.2f} MB = {metrics['bytes']['int8_onnx_over_teacher']:.3f} x "
          f"the dense teacher")


if __name__ == "__main__":
    main()
