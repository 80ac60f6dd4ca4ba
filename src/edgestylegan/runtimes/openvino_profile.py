"""Where an OpenVINO model's time goes: per-layer kernels, precisions and times from the CPU plugin's performance
counters, and the share of convolution MACs that really ran in int8 kernels.

The compiled (runtime) graph names each executed node's original layers (`originalLayersNames`), its kernel
(`primitiveType`, e.g. `brgconv_avx512_amx_1x1_i8`) and the precision it ran at (`runtimePrecision`); a convolution
counts as int8 when its kernel ran at i8/u8. MACs come from the original model's convolution shapes.
"""
from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np

CONV_TYPES = ("Convolution", "GroupConvolution")


def conv_macs(model) -> dict[str, int]:
    """Friendly name -> multiply-accumulates of every (Group)Convolution of a static-shape OpenVINO model."""
    macs = {}
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind in CONV_TYPES:
            weights = list(op.input(1).get_partial_shape().to_shape())
            per_output = int(np.prod(weights[1:] if kind == "Convolution" else weights[2:]))
            macs[op.get_friendly_name()] = int(np.prod(list(op.get_output_shape(0)))) * per_output
    return macs


def _rt(op) -> dict[str, str]:
    info = op.get_rt_info()
    return {k: str(info[k].astype(str)) for k in info.keys()}


def profile(path: str | Path, inputs: dict, threads: int | None = None, repeats: int = 3) -> list[dict]:
    """One row per executed node of the model at `path` (compiled at f32 precision hint: int8 parts stay int8):
    name, layer type, kernel, runtime precision, median real time over `repeats` calls (ms), and the convolution
    MACs it contains (0 for other nodes)."""
    from .onnx import compile_openvino

    compiled = compile_openvino(path, "f32", threads, shapes={k: list(np.shape(v)) for k, v in inputs.items()},
                                extra={"PERF_COUNT": "YES"})
    macs = conv_macs(_source_model(path, inputs))
    request = compiled.create_infer_request()
    times = collections.defaultdict(list)
    for _ in range(repeats + 1):
        request.infer(inputs)
        for p in request.profiling_info:
            times[p.node_name].append(p.real_time.total_seconds() * 1e3)
    rows = []
    for op in compiled.get_runtime_model().get_ops():
        info = _rt(op)
        name = op.get_friendly_name()
        if name not in times:
            continue
        originals = info.get("originalLayersNames", "").split(",")
        rows.append({"node": name, "layer_type": info.get("layerType", ""), "kernel": info.get("primitiveType", ""),
                     "precision": info.get("runtimePrecision", ""),
                     "time_ms": float(np.median(times[name][1:])),
                     "conv_macs": sum(macs.get(o, 0) for o in originals)})
    return rows


def _source_model(path: str | Path, inputs: dict):
    import openvino as ov

    model = ov.Core().read_model(str(path))
    model.reshape({k: list(np.shape(v)) for k, v in inputs.items()})
    return model


def int8_kernel(row: dict) -> bool:
    return row["precision"].lower() in ("i8", "u8") or bool(re.search(r"_(i8|u8)$", row["kernel"].lower()))


def summary(rows: list[dict]) -> dict:
    """Conv MACs in int8 kernels over all conv MACs, and time per (layer type, precision)."""
    conv = [r for r in rows if r["conv_macs"]]
    total = sum(r["conv_macs"] for r in conv)
    by_type = collections.defaultdict(float)
    for r in rows:
        by_type[f"{r['layer_type']}/{r['precision'] or '-'}"] += r["time_ms"]
    return {"conv_macs": total,
            "int8_conv_mac_fraction": sum(r["conv_macs"] for r in conv if int8_kernel(r)) / total if total else 0.0,
            "convs": len(conv), "int8_convs": sum(int8_kernel(r) for r in conv),
            "time_ms": sum(r["time_ms"] for r in rows),
            "time_ms_by_layer_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]))}
