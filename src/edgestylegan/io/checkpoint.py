"""Self-describing generator checkpoints: one safetensors file whose metadata holds the architecture config.

Loading never unpickles anything (safetensors); unknown formats, missing or unexpected tensors and shape
mismatches raise `CheckpointError` naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from ..models.mobilestylegan import Generator, GeneratorConfig
from ..errors import CheckpointError
from .atomic import write_safetensors

FORMAT = "edgestylegan.generator.v1"


def save_generator(gen: Generator, path: str | Path, metadata: dict | None = None) -> None:
    """Write `gen` (dense fp32) atomically; `metadata` (JSON-serialisable) is stored beside the config."""
    meta = {"format": FORMAT, "config": json.dumps(gen.config.to_dict()), "info": json.dumps(metadata or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in gen.state_dict().items()}
    write_safetensors(path, tensors, meta)


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {e}") from e
    return meta


def read_header(path: str | Path, fmt: str, kind: str) -> tuple[GeneratorConfig, dict]:
    """(architecture config, metadata) of a safetensors file that must be of format `fmt` (a `kind` of model)."""
    meta = read_metadata(path)
    if meta.get("format") != fmt:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} is not {fmt!r} (not an edgestylegan {kind})")
    try:
        config = GeneratorConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad architecture config in metadata: {e}") from e
    return config, meta


def load_generator(path: str | Path, map_location: str = "cpu") -> Generator:
    config, _ = read_header(path, FORMAT, "generator")
    return generator_from_state(config, load_file(str(path), device=map_location), path)


def generator_from_state(config: GeneratorConfig, state: dict[str, torch.Tensor], path: str | Path) -> Generator:
    """Build a Generator for `config` and load `state`, which must match its tensors exactly (names and shapes)."""
    gen = Generator(config)
    expected = gen.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, config expects {tuple(expected[key].shape)}")
    gen.load_state_dict(state)
    return gen.eval()


def checkpoint_info(path: str | Path) -> dict:
    return json.loads(read_metadata(path).get("info", "{}"))
