"""Sparse generator files: mostly-zero tensors as a bitmask + their non-zero values, optionally with int8 values.

Format ``edgestylegan.sparse_generator.v2``: one safetensors file (nothing is unpickled on load). Its metadata holds
the architecture config (as in ``io.checkpoint``), ``values`` (``float32`` or ``int8``, how the file was written) and
a JSON map ``codecs`` = {tensor name: {"codec", "shape", "dtype"[, "deflate"]}} with one entry for **every** tensor
of the generator's state dict; the entry says how that tensor ``name`` is stored:

=================== ============================================================================================
codec               stored tensors
=================== ============================================================================================
``raw``             ``name``: the tensor as is.
``sparse``          ``name::mask``: uint8, the bit pattern ``value != +0.0`` packed 8 entries per byte (numpy
                    ``packbits``, big-endian bit order, padding bits zero) over the row-major flattening;
                    ``name::values``: the entries whose bits are not all zero, row-major, in the tensor's dtype.
``int8_row``        ``name::q``: int8 [shape]; ``name::scale``: float32 [shape[0]], one per output row.
``sparse_int8_row`` ``name::mask`` as for ``sparse`` (of ``q != 0``); ``name::q``: int8 [nnz], the non-zero codes
                    row-major; ``name::scale``: float32 [shape[0]].
``int8_tensor``     ``name::q``: int8 [shape]; ``name::scale``: float32 [1].
=================== ============================================================================================

Decoding is ``q.to(float32) * scale`` per row (``dequantize_int8``); int8 codecs always decode to float32.

``deflate`` lists the parts (``mask``, ``values``, ``q``; never ``scale`` or a ``raw`` tensor) that are stored as a
zlib stream (stdlib, level 9) of the part's bytes instead of the part itself: a uint8 1-D tensor, inflated to
exactly the part's length (mask: ceil(numel / 8); values / q: count x item size, in the machine's byte order, i.e.
little-endian as safetensors itself). A part is deflated only when that makes it smaller. Measured on the pruned
1024² teacher (L1, per layer, all synthesis weights), synthesis masks shrink by 4 % at 0.6 sparsity, 25 % at 0.8,
48 % at 0.9 (and 23 % at 0.2); int8 values by ~11 %, int8 mapping weights by 7 %, int8 noise maps by 13 %, float32
non-zero values by 8-11 %. lzma makes masks another 0-8 % smaller (most at 0.9) and int8 codes ~1 %, at 5-10x
the time, so zlib it is. Whole 1024² teacher at 0.8 (L1, per layer): 5.39 -> 4.75 MB with int8 values, 18.06 ->
17.18 MB with float32 values.

What is int8 (``values="int8"``): every weight of an ``nn.Linear`` / ``nn.Conv2d`` (synthesis and mapping),
quantized symmetric per output row (scale = max|row| / L, q = round(w / scale), an all-zero row gets scale 0) with
L = 127, or fewer levels where the writer names them (``weight_levels``; the prune stage's choice,
``compress.reconstruct.weight_levels_for_error``: the fewest of 7, 15, 31, 63, 127 whose rounding adds at most a set fraction to the output
error that pruning left in the layer, so heavily pruned layers take 4-5 bits and lightly pruned ones keep 8), and
the fixed noise maps (``NoiseInjection.noise_map``, unit-variance Gaussian) with one per-tensor scale and codes in
[-L, L] for the smallest L = 2^(b-1) - 1 (b = 2..8 bits; scale = max|map| / L) whose rounding adds at most
``NOISE_MAP_ERROR`` RMS to the layer's pre-activation, noise_strength x scale / sqrt(12) (L = 127 where none does).
Most pretrained strengths are ~1e-3 or smaller, so the big maps need 2-4 bits and deflate to a fraction of a byte per
entry (the teacher pruned to 0.8: noise maps 0.20 MB instead of 0.61 MB; the decoded model's 1024² images are 83 dB
PSNR from those with L = 127 everywhere, 77.5 dB on the worst of 16 latents). The codes stay int8 tensors and the
decoder is unchanged. Zeros stay exactly zero, so pruned entries stay pruned; a weight smaller than half its row's
step becomes a zero too, and the mask is that of the stored codes. Biases, the constant input, noise strengths and
``w_avg`` stay float32. The decoded model is exactly ``int8_weight_roundtrip(gen)`` (bit for bit), so its quality is
what the file holds.

A weight is stored sparse (float32: density below ~31/32; int8: below 7/8) only when that is smaller than dense.
Float32 files restore every tensor bit for bit ("zero" is bitwise +0.0: a -0.0 is kept as a value).
"""
from __future__ import annotations

import copy
import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ..io.atomic import write_safetensors
from ..io.checkpoint import CheckpointError, generator_from_state, read_header
from ..models.mobilestylegan import Generator, NoiseInjection

FORMAT = "edgestylegan.sparse_generator.v2"
VALUES = ("float32", "int8")
CODECS = ("raw", "sparse", "int8_row", "sparse_int8_row", "int8_tensor")
ZLIB_LEVEL = 9
NOISE_MAP_ERROR = 3e-4   # RMS a stored noise map may add to its layer's pre-activation (module docstring)
WEIGHT_LEVELS = (7, 15, 31, 63, 127)   # 3..8-bit codes that `reconstruct.weight_levels_for_error` chooses from
_PARTS = {"raw": (), "sparse": ("mask", "values"), "int8_row": ("q", "scale"),
          "sparse_int8_row": ("mask", "q", "scale"), "int8_tensor": ("q", "scale")}
_DEFLATABLE = ("mask", "values", "q")
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
             torch.float64: torch.int64}
_DTYPES = {str(d).removeprefix("torch."): d for d in
           (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
            torch.int8, torch.uint8, torch.bool)}


# ---- bitmask + values ----------------------------------------------------------------------------------------------

def _nonzero_bits(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().contiguous().reshape(-1)
    if flat.dtype in _INT_VIEW:
        return flat.view(_INT_VIEW[flat.dtype]) != 0
    return flat != 0


def encode_tensor(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (packed bitmask uint8 [ceil(n/8)], non-zero values [nnz]) of `t` (any shape, any dtype)."""
    keep = _nonzero_bits(t)
    mask = torch.from_numpy(np.packbits(keep.numpy()))
    return mask, t.detach().contiguous().reshape(-1)[keep].clone()


def decode_tensor(mask: torch.Tensor, values: torch.Tensor, shape: list[int]) -> torch.Tensor:
    numel = int(np.prod(shape)) if shape else 1
    if mask.dtype != torch.uint8 or mask.dim() != 1 or mask.numel() != (numel + 7) // 8:
        raise ValueError(f"bitmask is {mask.dtype} {tuple(mask.shape)}, expected uint8 ({(numel + 7) // 8},)")
    bits = np.unpackbits(mask.numpy())
    if bits[numel:].any():
        raise ValueError("bitmask has set padding bits")
    keep = torch.from_numpy(bits[:numel].astype(bool))
    if values.dim() != 1 or int(keep.sum()) != values.numel():
        raise ValueError(f"bitmask has {int(keep.sum())} set bits but {values.numel()} values are stored")
    out = torch.zeros(numel, dtype=values.dtype)
    out[keep] = values
    return out.reshape(shape)


def sparse_bytes(t: torch.Tensor) -> int:
    """Payload bytes of the sparse encoding of `t` (bitmask + values), without file headers or deflate."""
    nnz = int(_nonzero_bits(t).sum())
    return (t.numel() + 7) // 8 + nnz * t.element_size()


# ---- int8 ------------------------------------------------------------------------------------------------------------

def quantize_int8(t: torch.Tensor, per_row: bool = True, levels: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 of a float tensor: -> (q int8 [shape] in [-levels, levels], scale float32 [shape[0]] or [1]).

    scale = max|row| / levels per output row (dim 0; per_row=False: one for the whole tensor); an all-zero row gets
    scale 0 and codes 0. Zeros map to code 0 exactly.
    """
    if not 1 <= levels <= 127:
        raise ValueError(f"levels must be in 1..127, got {levels}")
    t = t.detach().cpu().contiguous().to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("cannot quantize a tensor with non-finite entries")
    rows = t.reshape(t.shape[0] if per_row and t.dim() else 1, -1)
    scale = rows.abs().amax(dim=1) / levels
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(rows / safe[:, None]).clamp_(-levels, levels).to(torch.int8)
    return q.reshape(t.shape), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 tensor of `q`'s shape: q * scale, with `scale` one per row of dim 0 (or a single one)."""
    rows = q.reshape(scale.numel(), -1).to(torch.float32)
    return (rows * scale.to(torch.float32)[:, None]).reshape(q.shape)


def noise_map_levels(noise_map: torch.Tensor, strength: float) -> int:
    """The fewest levels 2^(b-1) - 1 (b = 2..8) whose rounding of `noise_map` adds at most NOISE_MAP_ERROR RMS to
    the pre-activation it is added to (strength x step / sqrt(12), step = max|map| / levels); 127 (as for weights)
    when none of them does."""
    peak = float(noise_map.detach().abs().max())
    for bits in range(2, 8):
        levels = 2 ** (bits - 1) - 1
        if abs(strength) * peak / levels / math.sqrt(12) <= NOISE_MAP_ERROR:
            return levels
    return 127


def int8_plan(gen: nn.Module, weight_levels: dict[str, int] | None = None) -> dict[str, tuple[str, int]]:
    """State-dict name -> ("row" | "tensor", levels) of every tensor that `values="int8"` quantizes: weights at 127
    levels unless `weight_levels` names fewer (`compress.reconstruct.weight_levels_for_error`), noise maps at
    `noise_map_levels`."""
    plan = {}
    for name, module in gen.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            plan[f"{prefix}weight"] = ("row", 127)
        elif isinstance(module, NoiseInjection):
            strength = float(module.noise_strength.detach())
            plan[f"{prefix}noise_map"] = ("tensor", noise_map_levels(module.noise_map, strength))
    for name, levels in (weight_levels or {}).items():
        if plan.get(name, ("",))[0] != "row":
            raise ValueError(f"{name} is not a weight that int8 files store per row")
        plan[name] = ("row", levels)
    return plan


@torch.no_grad()
def int8_weight_roundtrip(gen: Generator, weight_levels: dict[str, int] | None = None) -> Generator:
    """A copy of `gen` whose int8-coded tensors (`int8_plan`) are replaced by what an int8 file stores for them.

    `load_sparse_generator` of `save_sparse_generator(gen, path, values="int8", weight_levels=...)` equals it bit for
    bit (with the same `weight_levels`).
    """
    out = copy.deepcopy(gen)
    state = out.state_dict()                 # shares storage with `out`
    for name, (kind, levels) in int8_plan(out, weight_levels).items():
        q, scale = quantize_int8(state[name], per_row=kind == "row", levels=levels)
        state[name].copy_(dequantize_int8(q, scale))
    return out


# ---- state <-> stored tensors --------------------------------------------------------------------------------------

def _as_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _deflate(t: torch.Tensor) -> torch.Tensor | None:
    raw = _as_bytes(t)
    packed = zlib.compress(raw, ZLIB_LEVEL)
    return torch.frombuffer(bytearray(packed), dtype=torch.uint8) if len(packed) < len(raw) else None


def _inflate(t: torch.Tensor, dtype: torch.dtype, count: int) -> torch.Tensor:
    if t.dtype != torch.uint8 or t.dim() != 1:
        raise ValueError(f"deflated part is {t.dtype} {tuple(t.shape)}, expected uint8 1-D")
    size = count * torch.empty((), dtype=dtype).element_size()
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(t.numpy().tobytes(), size)
    except zlib.error as e:
        raise ValueError(f"corrupt zlib stream: {e}") from e
    if len(raw) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise ValueError(f"deflated part does not inflate to exactly {size} bytes")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype) if size else torch.empty(0, dtype=dtype)


def encode_state(state: dict[str, torch.Tensor], values: str = "float32", plan: dict[str, str] | None = None,
                 deflate: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Split a state dict into stored tensors and the codec map (see the module docstring).

    values="int8" quantizes the tensors named in `plan` (name -> ("row" | "tensor", levels), see `int8_plan`).
    """
    if values not in VALUES:
        raise ValueError(f"values must be one of {VALUES}, got {values!r}")
    plan = plan if values == "int8" else {}
    tensors, codecs = {}, {}
    for name, t in state.items():
        t = t.detach().contiguous().cpu()
        entry = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        parts: dict[str, torch.Tensor] = {}
        if name in plan:
            if t.dtype != torch.float32:
                raise ValueError(f"{name}: int8 values need a float32 tensor, got {t.dtype}")
            kind, levels = plan[name]
            q, scale = quantize_int8(t, per_row=kind == "row", levels=levels)
            nnz = int((q != 0).sum())
            if kind == "row" and (q.numel() + 7) // 8 + nnz < q.numel():
                entry["codec"] = "sparse_int8_row"
                parts["mask"], parts["q"] = encode_tensor(q)
            else:
                entry["codec"] = "int8_row" if kind == "row" else "int8_tensor"
                parts["q"] = q
            parts["scale"] = scale
        elif t.is_floating_point() and t.numel() >= 64 and sparse_bytes(t) < t.numel() * t.element_size():
            entry["codec"] = "sparse"
            parts["mask"], parts["values"] = encode_tensor(t)
        else:
            entry["codec"] = "raw"
            tensors[name] = t
        deflated = []
        for part, value in parts.items():
            packed = _deflate(value) if deflate and part in _DEFLATABLE else None
            if packed is not None:
                deflated.append(part)
            tensors[f"{name}::{part}"] = packed if packed is not None else value
        if deflated:
            entry["deflate"] = deflated
        codecs[name] = {"codec": entry.pop("codec"), **entry}
    return tensors, codecs


def _decode_one(name: str, entry: dict, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    codec, shape, dtype = entry.get("codec"), entry.get("shape"), _DTYPES.get(entry.get("dtype"))
    if codec not in CODECS:
        raise ValueError(f"{name}: unknown codec {codec!r}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape) or dtype is None:
        raise ValueError(f"{name}: bad shape/dtype {shape!r} {entry.get('dtype')!r}")
    deflated = entry.get("deflate", [])
    if not isinstance(deflated, list) or not set(deflated) <= set(_PARTS[codec]) & set(_DEFLATABLE):
        raise ValueError(f"{name}: bad deflate list {deflated!r} for codec {codec}")
    numel = int(np.prod(shape)) if shape else 1
    if codec == "raw":
        t = tensors[name]
        if list(t.shape) != shape or t.dtype != dtype:
            raise ValueError(f"{name}: stored {t.dtype} {list(t.shape)}, codec map says {dtype} {shape}")
        return t

    def part(key: str, part_dtype: torch.dtype, count: int | None) -> torch.Tensor:
        t = tensors[f"{name}::{key}"]
        if key in deflated:
            if count is None:
                raise ValueError(f"{name}::{key}: length unknown")
            return _inflate(t, part_dtype, count)
        if t.dtype != part_dtype or (t.dim() != 1 and not (key == "q" and codec in ("int8_row", "int8_tensor"))):
            raise ValueError(f"{name}::{key}: stored {t.dtype} {tuple(t.shape)}, expected {part_dtype}")
        return t.reshape(-1)

    def nnz_of(mask: torch.Tensor) -> int:
        return int(np.unpackbits(mask.numpy(), count=numel).sum()) if mask.numel() == (numel + 7) // 8 else -1

    if codec == "sparse":
        mask = part("mask", torch.uint8, (numel + 7) // 8)
        values = part("values", dtype, nnz_of(mask))
        return decode_tensor(mask, values, shape)
    if dtype != torch.float32:
        raise ValueError(f"{name}: codec {codec} decodes to float32, codec map says {dtype}")
    rows = (shape[0] if shape else 1) if codec != "int8_tensor" else 1
    scale = part("scale", torch.float32, None)
    if scale.numel() != rows or not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
        raise ValueError(f"{name}::scale: expected {rows} finite scales >= 0, got {scale.numel()} "
                         f"(min {float(scale.min()) if scale.numel() else 'n/a'})")
    if codec == "sparse_int8_row":
        mask = part("mask", torch.uint8, (numel + 7) // 8)
        q = decode_tensor(mask, part("q", torch.int8, nnz_of(mask)), shape)
    else:
        q = part("q", torch.int8, numel)
        if q.numel() != numel:
            raise ValueError(f"{name}::q: {q.numel()} codes, expected {numel}")
        q = q.reshape(shape)
    return dequantize_int8(q, scale)


def decode_state(tensors: dict[str, torch.Tensor], codecs: dict[str, dict]) -> dict[str, torch.Tensor]:
    """Inverse of `encode_state`; raises ValueError (naming the tensor) on anything inconsistent."""
    if not isinstance(codecs, dict) or not all(isinstance(e, dict) for e in codecs.values()):
        raise ValueError("codec map is not {name: {codec, shape, dtype}}")
    expected = set()
    for name, entry in codecs.items():
        parts = _PARTS.get(entry.get("codec"))
        if parts is None:
            raise ValueError(f"{name}: unknown codec {entry.get('codec')!r}")
        expected |= {name} if not parts else {f"{name}::{p}" for p in parts}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(f"stored tensors do not match the codec map: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    state = {}
    for name, entry in codecs.items():
        try:
            state[name] = _decode_one(name, entry, tensors)
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(name) else f"{name}: {e}") from e
    return state


# ---- files -----------------------------------------------------------------------------------------------------------

def save_sparse_generator(gen: Generator, path: str | Path, metadata: dict | None = None,
                          values: str = "float32", deflate: bool = True,
                          weight_levels: dict[str, int] | None = None) -> dict[str, dict]:
    """Write `gen` in the sparse format atomically; returns the codec map {tensor name: {codec, shape, dtype, ...}}.

    values="float32": every tensor is restored bit for bit. values="int8": the weights and noise maps are stored as
    int8 (module docstring), `weight_levels` as in `int8_plan`; the file decodes to
    `int8_weight_roundtrip(gen, weight_levels)`. deflate=False stores every part as is
    (the payload is then exactly mask bits + values + scales + raw tensors, plus the header).
    """
    tensors, codecs = encode_state(gen.state_dict(), values, int8_plan(gen, weight_levels), deflate)
    meta = {"format": FORMAT, "config": json.dumps(gen.config.to_dict()), "values": values,
            "codecs": json.dumps(codecs, separators=(",", ":")), "info": json.dumps(metadata or {})}
    write_safetensors(path, tensors, meta)
    return codecs


def _codecs(path: Path, meta: dict) -> dict:
    try:
        codecs = json.loads(meta["codecs"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad metadata in sparse generator file: {e}") from e
    if not isinstance(codecs, dict):
        raise CheckpointError(f"{path}: bad metadata in sparse generator file: codecs is not a map")
    return codecs


def load_sparse_generator(path: str | Path) -> Generator:
    """Rebuild the dense float32 Generator from a sparse file (float32 values: bit for bit; int8: dequantized)."""
    path = Path(path)
    config, meta = read_header(path, FORMAT, "sparse generator")
    codecs = _codecs(path, meta)
    try:
        state = decode_state(load_file(str(path)), codecs)
    except (KeyError, ValueError, RuntimeError, TypeError, SafetensorError) as e:
        raise CheckpointError(f"{path}: corrupt sparse tensor data: {e}") from e
    return generator_from_state(config, state, path)


def file_breakdown(path: str | Path) -> dict[str, dict]:
    """{tensor name: {"codec": codec, "bytes": {part: stored bytes}}} of a sparse file (header not included; a
    raw tensor's part is called "raw")."""
    path = Path(path)
    _, meta = read_header(path, FORMAT, "sparse generator")
    codecs = _codecs(path, meta)
    with safe_open(str(path), framework="pt") as f:
        sizes = {}
        for key in f.keys():
            s = f.get_slice(key)
            sizes[key] = int(np.prod(s.get_shape())) * _ST_ITEM_BYTES[s.get_dtype()]
    out = {}
    for name, entry in codecs.items():
        parts = _PARTS.get(entry.get("codec"), ())
        stored = {p: sizes.get(f"{name}::{p}", 0) for p in parts} if parts else {"raw": sizes.get(name, 0)}
        out[name] = {"codec": entry.get("codec"), "bytes": stored}
    return out


_ST_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
