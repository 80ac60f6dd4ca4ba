"""Stages eval_reference and evaluate@<variant> (evaluate_pruned@<amount>): the teacher reference features once, then
one variant's metrics, its info for the report and its sample strip. The model file follows from the variant id; a
variant smaller than the reference resolution also reads models/teacher.safetensors (its noise floor is the teacher
regenerated at that size)."""
from __future__ import annotations

import time
from pathlib import Path

from ..allocator import release_large_allocations
from ..artifacts.evaluation import EvalInfo, EvalRecord, ReferenceMeta
from ..config import load_params
from ..errors import UserError
from ..imaging import grid, save_png
from ..metrics.evaluate import (EvalConfig, Reference, build_reference, check_feature_assets, evaluate_variant,
                                reference_statistics)
from ..paths import Paths, pruned_variant
from .loaders import load_model

INT8_SOURCES = {"int8": "operating_point", "student-int8": "student"}   # variant -> Paths.int8_model source


def variant_model(variant: str, paths: Paths, engine: str | None = None) -> Path:
    """The file variant `variant` is (engine: quantize.engine, needed for int8 and student-int8 only)."""
    if variant == "teacher":
        return paths.teacher_model
    if variant == "student":
        return paths.student_model
    if variant in INT8_SOURCES:
        return paths.int8_model(engine, INT8_SOURCES[variant])
    if variant.startswith("pruned-"):
        try:
            amount = float(variant.removeprefix("pruned-"))
        except ValueError:
            amount = None
        if amount is not None and pruned_variant(amount) == variant:
            return paths.pruned_model(amount)
    raise UserError(f"unknown variant {variant!r}; known: teacher, student, int8, student-int8, pruned-<amount> "
                    f"(amount as in prune.amounts, e.g. pruned-0.2)")


def variant_sections(variant: str) -> list[str]:
    """The params sections stage evaluate@<variant> reads: eval, and quantize (for quantize.engine) for int8."""
    return ["eval", "quantize"] if variant in INT8_SOURCES else ["eval"]


def run_eval_reference(params_path: str | Path = "params.yaml", root: str | Path = ".") -> ReferenceMeta:
    """Write data/eval/reference.npz from models/teacher.safetensors."""
    release_large_allocations()   # Thousands of streamed batches: memory must stay flat as eval.num_samples grows.
    cfg = EvalConfig.for_reference(load_params(params_path, ["eval"])["eval"])
    paths = Paths(Path(root))
    check_feature_assets(cfg)
    arrays, meta = build_reference(load_model(paths.teacher_model), paths.teacher_model, cfg)
    Reference.write(paths.eval_reference, arrays, meta)
    return meta


def run_evaluate(variant: str, params_path: str | Path = "params.yaml",
                 root: str | Path = ".") -> tuple[EvalRecord, EvalInfo]:
    """Write metrics/eval/<variant>.json, reports/eval/<variant>.json and reports/eval/<variant>.png."""
    release_large_allocations()
    params = load_params(params_path, variant_sections(variant))
    cfg = EvalConfig.from_params(params["eval"])
    paths = Paths(Path(root))
    model_file = variant_model(variant, paths, params.get("quantize", {}).get("engine"))
    started = time.perf_counter()
    ref = Reference(paths.eval_reference, cfg)
    statistics = reference_statistics(cfg)   # Checked before minutes of generation.
    model = load_model(model_file)
    record, info, strip = evaluate_variant(variant, model, model_file, ref, statistics, cfg,
                                           load_seconds=time.perf_counter() - started,
                                           load_teacher=lambda: (load_model(paths.teacher_model), paths.teacher_model))
    record.write(paths.eval_metrics(variant))
    info.write(paths.eval_info(variant))
    save_png(grid(strip, columns=len(strip)), paths.eval_strip(variant))
    return record, info
