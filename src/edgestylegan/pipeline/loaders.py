"""Load any generator file the pipeline produces, by the format recorded in it.

Every loader returns an object callable as `model(z, truncation=1.0)` -> images [B, 3, R, R] with
`.resolution` and `.style_dim` attributes. Formats register here by name -> "module:function" (imported lazily).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import CheckpointError
from ..io.checkpoint import read_metadata

LOADERS: dict[str, str] = {
    "edgestylegan.generator.v1": "edgestylegan.io.checkpoint:load_generator",
    "edgestylegan.sparse_generator.v1": "edgestylegan.compress.sparse:load_sparse_generator",
    "edgestylegan.int8_generator.v1": "edgestylegan.compress.quantize:load_torch_int8",
    "onnx": "edgestylegan.runtimes.onnx:load_onnx_generator",
}


def model_format(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist (run the stage that produces it, e.g. `dvc repro`)")
    if path.suffix == ".onnx":
        return "onnx"
    return read_metadata(path).get("format", "")


def load_model(path: str | Path):
    fmt = model_format(path)
    if fmt not in LOADERS:
        raise CheckpointError(f"{path}: unknown model format {fmt!r}; known: {sorted(LOADERS)}")
    module_name, func = LOADERS[fmt].split(":")
    return getattr(importlib.import_module(module_name), func)(path)
