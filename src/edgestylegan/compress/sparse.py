"""Sparse generator files: tensors that are mostly zero are stored as a bitmask + their non-zero values.

Format ``edgestylegan.sparse_generator.v1``: one safetensors file (nothing is unpickled on load) whose metadata holds
the architecture config (as in ``io.checkpoint``) and a JSON map ``sparse`` = {tensor name: [shape, dtype]}. A
sparse tensor ``name`` is stored as two tensors:

* ``name::mask``: uint8, the bit pattern ``value != +0.0`` packed 8 entries per byte (numpy ``packbits``, big-endian
  bit order), over the row-major flattening;
* ``name::values``: the entries whose bits are not all zero, in row-major order, in the original dtype.

"Zero" is bitwise (+0.0): a -0.0 is kept as a value, so decoding restores every tensor bit for bit. A tensor is
stored sparse only when that is smaller than storing it dense (density below ~31/32 for float32); everything else
(buffers, biases, the mapping network) is stored as is.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..io.atomic import write_safetensors
from ..io.checkpoint import CheckpointError, generator_from_state, read_header
from ..models.mobilestylegan import Generator

FORMAT = "edgestylegan.sparse_generator.v1"
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
             torch.float64: torch.int64}


def _nonzero_bits(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().contiguous().reshape(-1)
    if flat.dtype in _INT_VIEW:
        return flat.view(_INT_VIEW[flat.dtype]) != 0
    return flat != 0


def encode_tensor(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (packed bitmask uint8 [ceil(n/8)], non-zero values [nnz]) of `t` (any shape)."""
    keep = _nonzero_bits(t)
    mask = torch.from_numpy(np.packbits(keep.numpy()))
    return mask, t.detach().contiguous().reshape(-1)[keep].clone()


def decode_tensor(mask: torch.Tensor, values: torch.Tensor, shape: list[int]) -> torch.Tensor:
    numel = int(np.prod(shape)) if shape else 1
    keep = torch.from_numpy(np.unpackbits(mask.numpy(), count=numel).astype(bool))
    if int(keep.sum()) != values.numel():
        raise ValueError(f"bitmask has {int(keep.sum())} set bits but {values.numel()} values are stored")
    out = torch.zeros(numel, dtype=values.dtype)
    out[keep] = values
    return out.reshape(shape)


def sparse_bytes(t: torch.Tensor) -> int:
    """Payload bytes of the sparse encoding of `t` (bitmask + values), without file headers."""
    nnz = int(_nonzero_bits(t).sum())
    return (t.numel() + 7) // 8 + nnz * t.element_size()


def encode_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Split a state dict into stored tensors and the {name: [shape, dtype]} map of sparse-encoded ones."""
    tensors, sparse = {}, {}
    for name, t in state.items():
        t = t.detach().contiguous().cpu()
        if t.is_floating_point() and t.numel() >= 64 and sparse_bytes(t) < t.numel() * t.element_size():
            mask, values = encode_tensor(t)
            tensors[f"{name}::mask"], tensors[f"{name}::values"] = mask, values
            sparse[name] = [list(t.shape), str(t.dtype).removeprefix("torch.")]
        else:
            tensors[name] = t
    return tensors, sparse


def decode_state(tensors: dict[str, torch.Tensor], sparse: dict[str, list]) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in tensors.items() if "::" not in k}
    for name, (shape, _dtype) in sparse.items():
        state[name] = decode_tensor(tensors[f"{name}::mask"], tensors[f"{name}::values"], shape)
    return state


def save_sparse_generator(gen: Generator, path: str | Path, metadata: dict | None = None) -> dict:
    """Write `gen` in the sparse format atomically. Returns {tensor name: [shape, dtype]} of the sparse tensors."""
    tensors, sparse = encode_state(gen.state_dict())
    meta = {"format": FORMAT, "config": json.dumps(gen.config.to_dict()), "sparse": json.dumps(sparse),
            "info": json.dumps(metadata or {})}
    write_safetensors(path, tensors, meta)
    return sparse


def load_sparse_generator(path: str | Path) -> Generator:
    """Rebuild the dense Generator from a sparse file; every tensor is restored bit for bit."""
    path = Path(path)
    config, meta = read_header(path, FORMAT, "sparse generator")
    try:
        sparse = json.loads(meta["sparse"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad metadata in sparse generator file: {e}") from e
    try:
        state = decode_state(load_file(str(path)), sparse)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt sparse tensor data: {e}") from e
    return generator_from_state(config, state, path)
