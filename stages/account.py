"""DVC stage account: parameters, non-zeros, bytes of every stored form, MACs and latency of every variant.

Variants come from params (never from globbing): the teacher, one pruned model per prune.amounts entry, the int8
models of the quantize stage (operating point prune.amount), and, when account.student is true, the student and
its int8 model (stage quantize_student).
Writes metrics/size.json (nested dicts of numbers). Latency: batch 1, z -> image at the variant's own resolution, median of
account.latency_repeats interleaved timed calls after account.latency_warmup untimed ones, account.threads threads.
"""
import argparse
import tempfile
from pathlib import Path

import torch

from edgestylegan.errors import UserError
from edgestylegan.cli import entry_point
from edgestylegan.runtimes.onnx import OnnxRuntimeGenerator, OpenVINOOnnxGenerator, export_onnx
from edgestylegan.compress.quantize import load_torch_int8
from edgestylegan.io.atomic import write_json
from edgestylegan.pipeline.loaders import load_model
from edgestylegan.metrics import accounting as acc
from edgestylegan.metrics.latency import generator_call, measure, openvino_ir_call
from edgestylegan.models.mobilestylegan import latents_from_seeds
from edgestylegan.config import load_params

QUANTIZED = Path("models/quantized")


def _sizes(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "gzip_bytes": acc.gzip_bytes(path)}


def _float_variant(gen, path: Path) -> dict:
    dense = acc.dense_file_bytes(gen)
    out = {"params": acc.parameter_counts(gen), "bytes": {"file": _sizes(path)},
           "stored_elements": acc.stored_elements(path), "macs": acc.mac_summary(gen.config),
           "earlier_study_counting": {"synthesis": acc.earlier_study_counting(gen.synthesis)}}
    if path.stat().st_size != dense:
        out["bytes"]["dense_fp32_serialised"] = dense
    return out


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", default="metrics/size.json")
    args = parser.parse_args()
    params = load_params(args.params, ["prune", "quantize", "account"])
    pr, qp, p = params["prune"], params["quantize"], params["account"]
    models = Path(args.models)
    teacher_path = models / "teacher.safetensors"
    pruned_paths = {str(float(a)): models / "pruned" / f"{float(a)}.safetensors" for a in pr["amounts"]}
    qdir = models / QUANTIZED.name
    int8_paths = {"onnx": qdir / "int8.onnx", "torch": qdir / "int8_torch.safetensors", "float_onnx": qdir / "float.onnx"}
    student_path = models / "student.safetensors"
    student_int8_path = models / "quantized_student" / "int8.onnx"
    needed = [teacher_path, *pruned_paths.values(), *int8_paths.values()] + \
        ([student_path, student_int8_path] if p["student"] else [])
    missing = [str(x) for x in needed if not x.is_file()]
    if missing:
        raise UserError(f"account needs {missing}; run `dvc repro` for the stages that produce them")
    torch.set_num_threads(p["threads"])
    runtimes = set(p["runtimes"])

    teacher = load_model(teacher_path)
    size = {"teacher": _float_variant(teacher, teacher_path)}
    size["teacher"]["bytes"]["dense_fp32"] = teacher_path.stat().st_size
    size["macs"] = size["teacher"]["macs"]

    size["pruned"] = {}
    for tag, path in pruned_paths.items():
        gen = load_model(path)
        dense = acc.dense_serialised(gen)
        entry = _float_variant(gen, path)
        entry["bytes"] = {"sparse": path.stat().st_size, "sparse_gzip": acc.gzip_bytes(path),
                          "dense_fp32": len(dense), "dense_fp32_gzip": acc.gzip_bytes(dense),
                          "sparse_over_dense": path.stat().st_size / len(dense)}
        size["pruned"][tag] = entry

    int8_torch = load_torch_int8(int8_paths["torch"])
    operating = load_model(teacher_path if pr["amount"] == 0 else pruned_paths[str(float(pr["amount"]))])
    size["int8"] = {
        "operating_point_prune_amount": pr["amount"],
        "default_engine_is_onnxruntime": int(qp["engine"] == "onnxruntime"),
        "bytes": {"file": _sizes(int8_paths["onnx" if qp["engine"] == "onnxruntime" else "torch"]),
                  "int8_onnx": _sizes(int8_paths["onnx"]), "int8_torch": _sizes(int8_paths["torch"]),
                  "float_onnx": _sizes(int8_paths["float_onnx"]), "dense_fp32": acc.dense_file_bytes(operating)},
        "bytes_over_dense_fp32_teacher": {
            "int8_onnx": int8_paths["onnx"].stat().st_size / teacher_path.stat().st_size,
            "int8_torch": int8_paths["torch"].stat().st_size / teacher_path.stat().st_size},
        "stored_elements": {"int8_onnx": acc.stored_elements(int8_paths["onnx"]),
                            "int8_torch": acc.stored_elements(int8_paths["torch"])},
        "params": acc.parameter_counts(operating),
        "macs": acc.mac_summary(operating.config),
        "earlier_study_counting": {"synthesis": acc.earlier_study_counting(int8_torch.synthesis)},
    }
    size["earlier_study_reproduction"] = acc.earlier_study_reproduction(teacher)

    student = None
    if p["student"]:
        student = load_model(student_path)
        size["student"] = _float_variant(student, student_path)
        size["student"]["bytes"]["dense_fp32"] = student_path.stat().st_size
        size["student-int8"] = {
            "bytes": {"file": _sizes(student_int8_path), "dense_fp32": student_path.stat().st_size},
            "bytes_over_dense_fp32_teacher": student_int8_path.stat().st_size / teacher_path.stat().st_size,
            "stored_elements": acc.stored_elements(student_int8_path),
            "params": size["student"]["params"], "macs": size["student"]["macs"],
        }

    # Latency: every runner in one interleaved measurement, so background load hits all alike.
    z = latents_from_seeds([0], teacher.config.style_dim)
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        teacher_onnx = int8_paths["float_onnx"] if pr["amount"] == 0 else export_onnx(teacher, Path(tmp) / "t.onnx")
        threads = p["threads"]
        if "torch_fp32" in runtimes:
            runners["teacher/torch_fp32"] = generator_call(teacher, z)
        if "onnxruntime_fp32" in runtimes:
            runners["teacher/onnxruntime_fp32"] = generator_call(OnnxRuntimeGenerator(teacher_onnx, threads), z)
        if "openvino_fp32" in runtimes:
            runners["teacher/openvino_fp32"] = generator_call(OpenVINOOnnxGenerator(teacher_onnx, threads), z)
        if "openvino_ir_fp32" in runtimes:
            from edgestylegan.runtimes.openvino_ir import OpenVINOGenerator

            runners["teacher/openvino_ir_fp32"] = openvino_ir_call(OpenVINOGenerator(precision="f32",
                                                                                     num_threads=threads), z)
        if "torch_int8" in runtimes:
            runners["int8/torch_int8"] = generator_call(int8_torch, z)
        if "onnxruntime_int8" in runtimes:
            runners["int8/onnxruntime_int8"] = generator_call(OnnxRuntimeGenerator(int8_paths["onnx"], threads), z)
        if "openvino_int8" in runtimes:
            runners["int8/openvino_int8"] = generator_call(OpenVINOOnnxGenerator(int8_paths["onnx"], threads), z)
        if p["pruned_latency"] and "torch_fp32" in runtimes:
            for tag, path in pruned_paths.items():
                runners[f"pruned/{tag}/torch_fp32"] = generator_call(load_model(path), z)
        if student is not None:
            zs = latents_from_seeds([0], student.config.style_dim)
            if "torch_fp32" in runtimes:
                runners["student/torch_fp32"] = generator_call(student, zs)
            if runtimes & {"onnxruntime_fp32", "openvino_fp32"}:
                student_onnx = export_onnx(student, Path(tmp) / "s.onnx")
                if "onnxruntime_fp32" in runtimes:
                    runners["student/onnxruntime_fp32"] = generator_call(OnnxRuntimeGenerator(student_onnx, threads),
                                                                         zs)
                if "openvino_fp32" in runtimes:
                    runners["student/openvino_fp32"] = generator_call(OpenVINOOnnxGenerator(student_onnx, threads),
                                                                      zs)
            if "onnxruntime_int8" in runtimes:
                runners["student-int8/onnxruntime_int8"] = generator_call(
                    OnnxRuntimeGenerator(student_int8_path, threads), zs)
            if "openvino_int8" in runtimes:
                runners["student-int8/openvino_int8"] = generator_call(
                    OpenVINOOnnxGenerator(student_int8_path, threads), zs)
        timings = measure(runners, repeats=p["latency_repeats"], warmup=p["latency_warmup"]) if runners else {}

    for key, stats in timings.items():
        *variant, runtime = key.split("/")
        node = size
        for part in variant:
            node = node.setdefault(part, {})
        node.setdefault("latency_ms", {})[runtime] = stats["median_ms"]
        node.setdefault("latency_min_ms", {})[runtime] = stats["min_ms"]
    ratios = {}
    for rt in ("torch", "onnxruntime", "openvino"):
        fp32 = size["teacher"].get("latency_ms", {}).get(f"{rt}_fp32")
        int8 = size["int8"].get("latency_ms", {}).get(f"{rt}_int8")
        if fp32 and int8:
            ratios[rt] = int8 / fp32
    size["int8"]["latency_over_fp32_same_runtime"] = ratios
    size["latency_setup"] = {"threads": p["threads"], "repeats": p["latency_repeats"], "warmup": p["latency_warmup"],
                             "batch": 1, "resolution": teacher.resolution}
    write_json(args.out, size)
    lat = size["teacher"].get("latency_ms", {})
    print("account: teacher latency " + ", ".join(f"{k} {v:.0f} ms" for k, v in lat.items())
          + "; int8 " + ", ".join(f"{k} {v:.0f} ms" for k, v in size["int8"].get("latency_ms", {}).items())
          + "; int8/fp32 " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
