"""Stage account@<variant>: parameters, non-zeros, bytes, MACs and latency of one variant -> metrics/size/<id>.json.

Variant ids: teacher | pruned-<amount> (one per prune.amounts entry) | int8 | student | student-int8. Each is its
own stage, so a change of prune.amount re-accounts only int8. Latency: batch 1, z -> image at the variant's own
resolution, median and min of account.latency_repeats calls after account.latency_warmup untimed ones, on
account.threads threads, the variant's runtimes interleaved round by round with the fp32 reference its ratio
divides by (int8: the same quantize stage's float.onnx and float model; pruned: the dense base model), so every ratio
in the record is within one run.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..artifacts.quantize import ENGINE_RUNTIMES
from ..artifacts.size import SizeRecord
from ..config import load_params
from ..errors import UserError
from ..metrics import accounting as acc
from ..metrics.latency import cpu_info, generator_call, measure, openvino_ir_call, torch_threads
from ..models.mobilestylegan import Generator, latents_from_seeds
from ..paths import Paths, amount_tag
from .loaders import load_model, model_format, source_model

SECTIONS = ["prune", "quantize", "account"]
FIXED_VARIANTS = ("teacher", "int8", "student", "student-int8")
DENSE_FORMAT = "edgestylegan.generator.v1"


@dataclasses.dataclass
class _Plan:
    """What one variant's run measures: its float tensors, its deployable file, and the runners to time."""

    gen: Generator                   # Float tensors counted (params, MACs, dense fp32 bytes).
    file: Path                       # The deployable file (bytes, gzip, stored elements).
    runners: dict[str, Callable]     # runtime -> no-argument call of the variant's model.
    reference: dict[str, Callable]   # runtime -> the fp32 reference timed in the same run.
    teacher: bool = False


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro {stage}` first")
    return path


def _load(path: Path, stage: str) -> Generator:
    gen = load_model(_need(path, stage))
    if not isinstance(gen, Generator):
        raise UserError(f"{path} is not a float generator (got {type(gen).__name__}); rerun `dvc repro {stage}`")
    return gen.eval()


def _base_stage(base: str) -> str:
    return "fetch_teacher" if base == "teacher" else "distill"


def variant_kind(variant: str) -> tuple[str, float | None]:
    """(kind, amount) of a variant id; a pruned id spells its amount as `paths.amount_tag` does ("pruned-0.2")."""
    if variant in FIXED_VARIANTS:
        return variant, None
    tag = variant.removeprefix("pruned-")
    try:
        amount = float(tag)
    except ValueError:
        amount = None
    if tag != variant and amount is not None and amount_tag(amount) == tag and 0 < amount < 1:
        return "pruned", amount
    raise UserError(f"--variant {variant!r}: expected one of {', '.join(FIXED_VARIANTS)} or pruned-<amount> (an "
                    f"entry of prune.amounts, e.g. pruned-0.2)")


def _float_runners(gen: Generator, onnx: Path | None, runtimes: set, threads: int, z: torch.Tensor) -> dict:
    from ..runtimes.onnx import OnnxRuntimeGenerator, OpenVINOOnnxGenerator

    out = {}
    if "torch_fp32" in runtimes:
        out["torch_fp32"] = generator_call(gen, z)
    if onnx is not None and "onnxruntime_fp32" in runtimes:
        out["onnxruntime_fp32"] = generator_call(OnnxRuntimeGenerator(onnx, threads), z)
    if onnx is not None and "openvino_fp32" in runtimes:
        out["openvino_fp32"] = generator_call(OpenVINOOnnxGenerator(onnx, threads), z)
    return out


def _int8_runners(paths: Paths, source: str, stage: str, runtimes: set, threads: int, z: torch.Tensor) -> dict:
    """Each requested int8 runtime on the quantize output it runs (`ENGINE_RUNTIMES`: int8.xml on OpenVINO, int8.onnx
    on ONNX Runtime)."""
    from ..runtimes.onnx import OnnxRuntimeGenerator, OpenVINOOnnxGenerator

    make = {"onnxruntime_int8": OnnxRuntimeGenerator, "openvino_int8": OpenVINOOnnxGenerator}
    return {runtime: generator_call(make[runtime](_need(paths.int8_model(engine, source), stage), threads), z)
            for engine, runtime in ENGINE_RUNTIMES.items() if runtime in runtimes}


def _plan(kind: str, amount: float | None, params: dict, paths: Paths, tmp: Path) -> _Plan:
    pr, p = params["prune"], params["account"]
    runtimes, threads = set(p["runtimes"]), p["threads"]
    if kind == "teacher":
        gen = _load(paths.teacher_model, "fetch_teacher")
        z = latents_from_seeds([0], gen.style_dim)
        onnx = None
        if runtimes & {"onnxruntime_fp32", "openvino_fp32"}:
            from ..runtimes.onnx import export_onnx

            onnx = export_onnx(gen, tmp / "teacher.onnx")
        runners = _float_runners(gen, onnx, runtimes, threads, z)
        if "openvino_ir_fp32" in runtimes:
            from ..runtimes.openvino_ir import OpenVINOGenerator

            # The installed random-face IR is the fixed latency anchor whatever teacher.source is: its own z.
            runners["openvino_ir_fp32"] = openvino_ir_call(OpenVINOGenerator(precision="f32", num_threads=threads))
        return _Plan(gen, paths.teacher_model, runners, {}, teacher=True)
    if kind == "pruned":
        if not paths.pruned_model(amount).is_file() and amount not in pr["amounts"]:
            raise UserError(f"pruned-{amount_tag(amount)}: {amount} is not one of prune.amounts {pr['amounts']}")
        gen = _load(paths.pruned_model(amount), f"prune@{amount_tag(amount)}")
        runners, reference = {}, {}
        if p["pruned_latency"] and "torch_fp32" in runtimes:
            z = latents_from_seeds([0], gen.style_dim)
            runners["torch_fp32"] = generator_call(gen, z)
            reference["torch_fp32"] = generator_call(_load(paths.base_model(pr["base"]), _base_stage(pr["base"])), z)
        return _Plan(gen, paths.pruned_model(amount), runners, reference)
    if kind == "student":
        gen = _load(paths.student_model, "distill")
        z = latents_from_seeds([0], gen.style_dim)
        onnx = _need(paths.float_onnx("student"), "quantize_student") \
            if runtimes & {"onnxruntime_fp32", "openvino_fp32"} else None
        return _Plan(gen, paths.student_model, _float_runners(gen, onnx, runtimes, threads, z), {})
    # int8 / student-int8: the quantize.engine file, timed with the fp32 model it was quantized from.
    source, stage = ("student", "quantize_student") if kind == "student-int8" else ("operating_point", "quantize")
    gen = _load(source_model(source, pr, paths)[0], stage)
    z = latents_from_seeds([0], gen.style_dim)
    runners = _int8_runners(paths, source, stage, runtimes, threads, z)
    families = {r.split("_")[0] for r in runners}
    wanted = {f"{f}_fp32" for f in families} & runtimes
    onnx = _need(paths.float_onnx(source), stage) if wanted & {"onnxruntime_fp32", "openvino_fp32"} else None
    reference = _float_runners(gen, onnx, wanted, threads, z)
    return _Plan(gen, _need(paths.int8_model(params["quantize"]["engine"], source), stage), runners, reference)


def _bytes(plan: _Plan) -> dict:
    dense = None
    if model_format(plan.file) != DENSE_FORMAT:
        data = acc.dense_serialised(plan.gen)
        dense = {"bytes": len(data), "gzip_bytes": acc.gzip_bytes(data)}
    return {"file": acc.file_sizes(plan.file), "dense_fp32": dense}


def run_account(variant: str, params_path: str | Path = "params.yaml", root: str | Path = ".",
                progress: bool = True) -> SizeRecord:
    paths = Paths(Path(root))
    params = load_params(params_path, SECTIONS)
    p = params["account"]
    kind, amount = variant_kind(variant)
    with torch_threads(p["threads"]), tempfile.TemporaryDirectory() as tmp:
        plan = _plan(kind, amount, params, paths, Path(tmp))
        runners = {**{("variant", k): v for k, v in plan.runners.items()},
                   **{("reference", k): v for k, v in plan.reference.items()}}
        timings = measure(runners, repeats=p["latency_repeats"], warmup=p["latency_warmup"],
                          progress=progress) if runners else {}
    lat = {side: {rt: t for (s, rt), t in timings.items() if s == side} for side in ("variant", "reference")}
    ratios = {}
    for runtime, t in lat["variant"].items():
        family = runtime.split("_")[0]
        ref = lat["reference"].get(f"{family}_fp32")
        if ref is not None:
            ratios[family] = t["median_ms"] / ref["median_ms"]
    record = SizeRecord(
        params=acc.parameter_counts(plan.gen), bytes=_bytes(plan), stored_elements=acc.stored_elements(plan.file),
        macs=acc.mac_summary(plan.gen.config),
        latency_ms={rt: t["median_ms"] for rt, t in lat["variant"].items()},
        latency_min_ms={rt: t["min_ms"] for rt, t in lat["variant"].items()},
        reference_latency_ms={rt: t["median_ms"] for rt, t in lat["reference"].items()},
        reference_latency_min_ms={rt: t["min_ms"] for rt, t in lat["reference"].items()},
        latency_over_fp32_same_runtime=ratios,
        latency_setup={"threads": p["threads"], "repeats": p["latency_repeats"], "warmup": p["latency_warmup"],
                       "batch": 1, "resolution": plan.gen.resolution, "cpu": cpu_info()},
        earlier_study_counting={"synthesis": acc.earlier_study_counting(plan.gen.synthesis)} if plan.teacher else None,
        earlier_study_reproduction=acc.earlier_study_reproduction(plan.gen) if plan.teacher else None)
    record.write(paths.size_metrics(variant))
    return record
