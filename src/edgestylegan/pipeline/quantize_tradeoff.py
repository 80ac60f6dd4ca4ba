"""The int8 recipe trade-off: for each NNCF recipe (overrides of params.yaml's quantize section), the held-out PSNR
against fp32, the study's distribution metrics (stage evaluate's protocol, against data/eval/reference.npz), the share
of conv MACs that ran in int8 kernels, and the OpenVINO latency, every recipe and the fp32 model timed in one
interleaved run. A benchmark (scripts/quantize_tradeoff.py), not a DVC stage: it quantizes models/quantized/float.onnx
(stage quantize's export of the operating point; source "student": stage quantize_student's models/quantized_student/
float.onnx) and writes reports/benchmarks/quantize_tradeoff{,_student}.{csv,md}.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..compress import quantize as q
from ..config import SCHEMA, read_yaml, validate
from ..errors import UserError
from ..io.atomic import write_text
from ..io.tables import csv_text
from ..metrics.evaluate import EvalConfig, Reference, evaluate_variant, reference_statistics
from ..metrics.latency import cpu_info, generator_call, measure
from ..paths import Paths
from .loaders import SOURCES
from .quantize import float_last_blocks
from ..runtimes import openvino_profile
from ..runtimes.onnx import OpenVINOOnnxGenerator, generator_metadata, save_openvino_ir

DEFAULT_RECIPES = {
    "performance preset, no overflow fix, all int8, NNCF's ranges": {"float_ops": [], "float_blocks": 0,
                                                                     "overflow_fix": "disable", "preset": "performance",
                                                                     "range_estimator": "default"},
    "all int8 (mixed, overflow fix)": {"float_ops": [], "float_blocks": 0},
    "MatMul float, 3 float blocks": {"float_ops": ["MatMul"], "float_blocks": 3},
    "MatMul + Multiply float, 0 float blocks": {"float_ops": ["MatMul", "Multiply"], "float_blocks": 0},
    "MatMul + Multiply float, 2 float blocks, NNCF's ranges": {"float_ops": ["MatMul", "Multiply"], "float_blocks": 2,
                                                              "range_estimator": "default"},
    "MatMul + Multiply float, 2 float blocks, mean_quantile ranges": {"float_ops": ["MatMul", "Multiply"],
                                                                     "float_blocks": 2,
                                                                     "range_estimator": "mean_quantile"},
    "MatMul + Multiply float, 2 float blocks": {"float_ops": ["MatMul", "Multiply"], "float_blocks": 2},
    "MatMul + Multiply float, 2 float blocks, float head": {"float_ops": ["MatMul", "Multiply"], "float_blocks": 2,
                                                           "float_head": True},
    "MatMul + Multiply float, 3 float blocks": {"float_ops": ["MatMul", "Multiply"], "float_blocks": 3},
    "MatMul + Multiply float, 5 float blocks": {"float_ops": ["MatMul", "Multiply"], "float_blocks": 5},
}
"""What each lever costs: NNCF's performance preset with nothing else, then the portability fix, the float-block cut, the
style multiplies, the range estimators and the output head (every recipe not naming a key keeps params.yaml's value)."""

COLUMNS = ["recipe", "overrides", "psnr_db_mean", "psnr_db_min", "int8_conv_mac_fraction", "fd_enl0",
           "fid_vs_teacher", "latency_ms", "latency_vs_fp32"]


def require_quantize_outputs(paths: Paths, source: str, *files: Path) -> None:
    """Stage quantize's (source student: quantize_student's) `files` exist and are generator exports: a UserError
    naming the stage to run if one is missing, a CheckpointError naming the file if one is unreadable."""
    if source not in SOURCES:
        raise UserError(f"--source {source!r}: choose one of {SOURCES}")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        stage = "quantize_student" if source == "student" else "quantize"
        raise UserError(f"{' and '.join(missing)} not found; run `dvc repro {stage}` first")
    for f in files:
        generator_metadata(f)


def recipe_params(raw: dict, overrides: dict, source: str) -> dict:
    """params.yaml's quantize section with `overrides` applied, validated by the params schema (a bad key or value
    is a UserError naming the recipe)."""
    unknown = sorted(set(overrides) - set(SCHEMA["quantize"]))
    if unknown:
        raise UserError(f"recipe {source!r}: unknown quantize key(s) {unknown}; known: {sorted(SCHEMA['quantize'])}")
    return validate({**raw, "quantize": {**raw["quantize"], **overrides}}, ["quantize"], f"recipe {source!r}")["quantize"]


def read_recipes(path: str | Path) -> dict[str, dict]:
    """{recipe name: quantize overrides} from a YAML file."""
    import yaml

    try:
        recipes = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"recipes file {path}: {e}") from e
    if not isinstance(recipes, dict) or not recipes or not all(isinstance(v, dict) for v in recipes.values()):
        raise UserError(f"recipes file {path} must map each recipe name to its quantize overrides, e.g. "
                        f"'two float blocks: {{float_blocks: 2}}'")
    return recipes


def _markdown(rows: list[dict], cpu: dict, fp32_ms: float, n: int, fidelity: int) -> str:
    isa = ", ".join(sorted(k for k, v in cpu.get("isa", {}).items() if v)) or "unknown"
    lines = ["# int8 recipe trade-off (OpenVINO, NNCF)", "",
             f"CPU: {cpu.get('model_name')} (ISA: {isa}). PSNR: int8 vs float.onnx on OpenVINO fp32, on {fidelity} held-out latents at full "
             f"resolution. fd_enl0 / fid_vs_teacher: stage evaluate's protocol (N = {n}, vs the teacher's samples). "
             f"Latency: batch 1, interleaved medians in one run; the fp32 model (OpenVINO) took {fp32_ms:.1f} ms.", "",
             "| recipe | PSNR mean dB | PSNR min dB | conv MACs in int8 kernels | fd_enl0 | fid_vs_teacher | latency ms "
             "| x fp32 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['psnr_db_mean']:.2f} | {r['psnr_db_min']:.2f} | "
                     f"{100 * r['int8_conv_mac_fraction']:.1f} % | {r['fd_enl0']:.1f} | "
                     f"{r['fid_vs_teacher']:.1f} | {r['latency_ms']:.1f} | {r['latency_vs_fp32']:.2f} |")
    return "\n".join(lines) + "\n"


def run_quantize_tradeoff(recipes: dict[str, dict] | None = None, params_path: str | Path = "params.yaml",
                          root: str | Path = ".", repeats: int = 5, threads: int | None = None,
                          source: str = "operating_point") -> list[dict]:
    recipes = DEFAULT_RECIPES if recipes is None else recipes
    paths = Paths(Path(root))
    raw = read_yaml(params_path)
    checked = {name: recipe_params(raw, over, name) for name, over in recipes.items()}   # All before any work.
    base = validate(raw, ["quantize", "eval", "prune"], str(params_path))
    cfg = EvalConfig.from_params(base["eval"])
    float_onnx = paths.float_onnx(source)
    require_quantize_outputs(paths, source, float_onnx)
    ref = Reference(paths.eval_reference, cfg)
    statistics = reference_statistics(cfg)
    p = base["quantize"]
    fp32 = OpenVINOOnnxGenerator(float_onnx, threads)
    config = fp32.config
    held_out = q.styles_inputs(p["fidelity_seed"], p["fidelity_samples"], config.style_dim, p["truncation"])
    reference = [fp32.run_numpy(x["z"], x["truncation"]) for x in held_out]

    rows, runners = [], {"fp32": generator_call(fp32)}
    variant, suffix = ("student-int8", "_student") if source == "student" else ("int8", "")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, recipe) in enumerate(checked.items()):
            print(f"[{i + 1}/{len(checked)}] {name}", flush=True)
            calibration = q.styles_inputs(recipe["calibration_seed"], recipe["calibration_samples"],
                                          config.style_dim, recipe["truncation"])
            xml = save_openvino_ir(q.nncf_quantize(q.openvino_model(float_onnx), calibration, recipe,
                                                   float_last_blocks=float_last_blocks(recipe, source, base["prune"])),
                                   Path(tmp) / f"recipe{i}.xml", config, "int8", {"recipe": recipes[name]})
            model = OpenVINOOnnxGenerator(xml, threads)
            psnr = q.psnr_per_image([model.run_numpy(x["z"], x["truncation"]) for x in held_out], reference)
            kernels = openvino_profile.summary(openvino_profile.profile(xml, held_out[0], threads=threads))
            record, _, _ = evaluate_variant(variant, model, xml, ref, statistics, cfg, load_seconds=0.0)
            rows.append({"recipe": name, "overrides": recipes[name], "psnr_db_mean": float(np.mean(psnr)),
                         "psnr_db_min": float(np.min(psnr)),
                         "int8_conv_mac_fraction": kernels["int8_conv_mac_fraction"],
                         "fd_enl0": record.scores.get("fd_enl0", float("nan")),
                         "fid_vs_teacher": record.scores.get("fid_vs_teacher", float("nan"))})
            runners[name] = generator_call(model)
        latency = measure(runners, repeats=repeats, warmup=1, progress=True)
    fp32_ms = latency["fp32"]["median_ms"]
    for row in rows:
        row["latency_ms"] = latency[row["recipe"]]["median_ms"]
        row["latency_vs_fp32"] = row["latency_ms"] / fp32_ms

    out = paths.reports / "benchmarks"
    write_text(out / f"quantize_tradeoff{suffix}.csv", csv_text(rows, COLUMNS))
    write_text(out / f"quantize_tradeoff{suffix}.md", _markdown(rows, cpu_info(), fp32_ms, cfg.num_samples, len(held_out)))
    return rows
