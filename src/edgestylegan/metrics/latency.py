"""Latency measurement: batch-1 wall-clock medians of callables, interleaved so background load hits all alike.

    from edgestylegan.metrics.latency import measure, generator_call
    results = measure({"torch_fp32": generator_call(gen, z), "ort_fp32": generator_call(ort_model, z)},
                      repeats=5, warmup=1)
    results["torch_fp32"]["median_ms"]

`measure` runs `warmup` untimed calls of every runner, then `repeats` rounds in which each runner is timed once
(round-robin, so a burst of load from other processes spreads over all runtimes instead of one). It reports
median / min / mean / max in milliseconds. Timings on a shared machine are noisy: report the median and say so.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

import torch

from ..models.mobilestylegan import latents_from_seeds


def measure(runners: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
            interleave: bool = True) -> dict[str, dict]:
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}

    def timed(name, run):
        start = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - start)

    if interleave:
        for _ in range(repeats):
            for name, run in runners.items():
                timed(name, run)
    else:
        for name, run in runners.items():
            for _ in range(repeats):
                timed(name, run)
    return {name: summarize(t, warmup) for name, t in times.items()}


def summarize(seconds: list[float], warmup: int = 0) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "mean_ms": statistics.fmean(ms), "max_ms": max(ms),
            "repeats": len(ms), "warmup": warmup}


def generator_call(model, z: torch.Tensor | None = None, truncation: float = 1.0) -> Callable[[], object]:
    """A no-argument runner: one batch through `model(z, truncation)` (any loader's model, torch or ONNX/OpenVINO)."""
    if z is None:
        z = latents_from_seeds([0])

    def run():
        with torch.inference_mode():
            return model(z, truncation=truncation)

    return run


def openvino_ir_call(runtime, z: torch.Tensor | None = None) -> Callable[[], object]:
    """Runner for the original random-face IR (`runtimes.openvino_ir.OpenVINOGenerator`): mapping + synthesis IR."""
    if z is None:
        z = latents_from_seeds([0])
    z_np = z.numpy()
    return lambda: runtime.synthesize(runtime.style(z_np))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Temporarily set PyTorch's intra-op thread count (None: leave it)."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
