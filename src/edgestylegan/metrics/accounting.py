"""Size and compute accounting from what is really stored and really computed.

Conventions
* Parameters are counted from the tensors (`nn.Parameter`s; buffers such as the fixed noise maps separately).
  "Non-zero" is bitwise (+0.0 is zero).
* Bytes are file sizes on disk (or the exact length of the serialised file for forms not written to disk), and their
  gzip (level 6) compressed sizes.
* MACs are analytic, from the configuration's shapes (`models.macs`, where the convention is written down).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
from torch import nn

from ..io.atomic import safetensors_bytes
from ..models.macs import analytic_macs
from ..models.mobilestylegan import Generator, GeneratorConfig

# Upstream MobileStyleGAN's synthesis-net buffers (style_inv 3,744 + 8 IDWTs x 8 + device_info 1), spec section 1.2:
# the earlier study's "(params + buffers) x 4 bytes" used these.
UPSTREAM_BUFFERS = 3_809


def state_dicts_equal(a: dict, b: dict) -> bool:
    """Same keys, shapes, dtypes and bits."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k].detach().cpu().contiguous(), b[k].detach().cpu().contiguous()
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.numel() and not torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
            return False
    return True


def dense_serialised(gen: Generator) -> bytes:
    """The dense fp32 file `io.checkpoint.save_generator` would write for `gen` (with empty info), in memory, byte for
    byte (so its gzip size does not vary from process to process)."""
    from ..io.checkpoint import FORMAT

    meta = {"format": FORMAT, "config": json.dumps(gen.config.to_dict()), "info": "{}"}
    tensors = {k: v.detach().contiguous().cpu() for k, v in gen.state_dict().items()}
    return safetensors_bytes(tensors, meta)


def dense_file_bytes(gen: Generator) -> int:
    """Exact size of the dense fp32 file for `gen` (serialised in memory, not written)."""
    return len(dense_serialised(gen))


def gzip_bytes(path_or_bytes, level: int = 6) -> int:
    data = Path(path_or_bytes).read_bytes() if isinstance(path_or_bytes, (str, Path)) else path_or_bytes
    return len(gzip.compress(data, compresslevel=level, mtime=0))


def model_files(path: str | Path) -> list[Path]:
    """The files a model is stored in: an OpenVINO IR (.xml) keeps its weights in the .bin beside it."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def file_sizes(path: str | Path) -> dict:
    """Bytes on disk of everything the model needs, and gzip'd (each file alone, summed)."""
    files = model_files(path)
    return {"bytes": sum(f.stat().st_size for f in files), "gzip_bytes": sum(gzip_bytes(f) for f in files)}


def parameter_counts(gen: Generator) -> dict:
    """Parameters / non-zeros / sparsity of the synthesis net and of the whole generator; buffers separately."""
    out = {}
    for scope, module in (("synthesis", gen.synthesis), ("generator", gen)):
        params = [p.detach() for p in module.parameters()]
        total = sum(p.numel() for p in params)
        zeros = sum(int((p == 0).sum()) for p in params)
        out[scope] = {"params": total, "nonzero": total - zeros, "sparsity": zeros / total if total else 0.0,
                      "buffers": sum(b.numel() for b in module.buffers())}
    return out


def earlier_study_counting(module: nn.Module) -> dict:
    """The EdgeStyleGAN way: `sum(p.numel() for p in module.parameters())` and (params + buffers) * 4 bytes / 2^20.

    After int8 conversion, packed int8 weights are not `nn.Parameter`s, so they silently drop out of this count.
    """
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers())
    return {"params_listed": params, "buffers_listed": buffers, "mib_claimed": (params + buffers) * 4 / 2**20}


def earlier_study_reproduction(gen: Generator) -> dict:
    """Reproduce "8,852,079 -> 3,878,031 params, 33.78 -> 14.81 MB" on the upstream parameter set of `gen`.

    Dynamic int8 quantization of every synthesis `nn.Linear` (the study's fallback path), then its counting, with
    upstream's 3,809 buffers (our synthesis net holds the fixed noise maps as buffers instead of style_inv).
    """
    import warnings

    from ..models.macs import upstream_parameter_set

    full = upstream_parameter_set(gen)
    before = sum(p.numel() for p in full.synthesis.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(full.synthesis, {nn.Linear}, dtype=torch.qint8)
    after = sum(p.numel() for p in quantized.parameters())
    linear = sum(m.weight.numel() + m.bias.numel() for m in full.synthesis.modules() if isinstance(m, nn.Linear))
    return {"params_before": before, "params_listed_after_dynamic_int8_linear": after,
            "linear_params_dropped_from_count": linear,
            "mib_claimed_before": (before + UPSTREAM_BUFFERS) * 4 / 2**20,
            "mib_claimed_after": (after + UPSTREAM_BUFFERS) * 4 / 2**20}


def mac_summary(config: GeneratorConfig) -> dict:
    """MACs of `config` and of the same net with every training head (upstream's parameter set)."""
    import dataclasses as dc

    ours = analytic_macs(config)
    full = analytic_macs(dc.replace(config, all_heads=True))
    return {
        "gmac": ours["total"] / 1e9, "gmac_conv": ours["conv"] / 1e9,
        "gmac_modulation_linear": ours["modulation_linear"] / 1e9, "gmac_mapping": ours["mapping"] / 1e9,
        "elementwise_gops": ours["elementwise_ops"] / 1e9,
        "gflops_2mac_plus_elementwise": ours["flops_2mac_plus_elementwise"] / 1e9,
        "all_heads": {"gmac": full["total"] / 1e9, "gflops_2mac": 2 * full["total"] / 1e9,
                      "gflops_2mac_plus_elementwise": full["flops_2mac_plus_elementwise"] / 1e9},
    }


def stored_elements(path: str | Path) -> dict:
    """Elements per stored dtype in a safetensors, ONNX or OpenVINO IR file (what the bytes are made of)."""
    from collections import Counter

    path = Path(path)
    counts: Counter = Counter()
    if path.suffix == ".xml":
        import openvino as ov

        for op in ov.Core().read_model(str(path)).get_ops():
            if op.get_type_name() == "Constant":
                counts[op.get_element_type().get_type_name()] += int(np_prod(op.get_output_shape(0)))
    elif path.suffix == ".onnx":
        import onnx
        from onnx import helper

        model = onnx.load(str(path))
        for init in model.graph.initializer:
            dtype = helper.tensor_dtype_to_np_dtype(init.data_type).name
            counts[dtype] += int(np_prod(init.dims))
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                t = f.get_slice(key)
                counts[str(t.get_dtype()).lower()] += int(np_prod(t.get_shape()))
    return dict(counts)


def np_prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
