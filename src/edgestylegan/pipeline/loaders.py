"""Load any generator file the pipeline produces, by the format recorded in it.

Every loader returns an object callable as `model(z, truncation=1.0)` -> images [B, 3, R, R] with
`.resolution` and `.style_dim` attributes. The registry sits above every format it loads (pipeline layer).
"""
from __future__ import annotations

from pathlib import Path

from ..compress.sparse import load_sparse_generator
from ..errors import CheckpointError, UserError
from ..io.checkpoint import load_generator, read_metadata
from ..paths import Paths
from ..runtimes.onnx import load_onnx_generator, load_openvino_generator

LOADERS = {
    "edgestylegan.generator.v1": load_generator,
    "edgestylegan.sparse_generator.v2": load_sparse_generator,
    "onnx": load_onnx_generator,
    "openvino_ir": load_openvino_generator,
}
SOURCES = ("operating_point", "student")
"""What stage quantize quantizes (and account times it against): prune.amount's model, or the student."""


def model_format(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist (run the stage that produces it, e.g. `dvc repro`)")
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".xml":
        return "openvino_ir"
    return read_metadata(path).get("format", "")


def load_model(path: str | Path):
    fmt = model_format(path)
    if fmt not in LOADERS:
        raise CheckpointError(f"{path}: unknown model format {fmt!r}; known: {sorted(LOADERS)}")
    return LOADERS[fmt](path)


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
