"""Latency measurement: batch-1 wall-clock medians of callables, interleaved so background load hits all alike.

    from edgestylegan.metrics.latency import measure, generator_call
    results = measure({"torch_fp32": generator_call(gen, z), "ort_fp32": generator_call(ort_model, z)},
                      repeats=5, warmup=1)
    results["torch_fp32"]["median_ms"]

`measure` runs `warmup` untimed calls of every runner, then `repeats` rounds in which each runner is timed once
(round-robin, so a burst of load from other processes spreads over all runtimes instead of one). It reports
median / min / mean / max in milliseconds. Timings on a shared machine are noisy: report the median and say so, and
compare two timings only when they come from the same `measure` call. `cpu_info()` names the CPU they ran on.
"""
from __future__ import annotations

import contextlib
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from ..models.mobilestylegan import latents_from_seeds


def measure(runners: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
            interleave: bool = True, progress: bool = False) -> dict[str, dict]:
    """progress: a tqdm bar over every call (warmup included) on stderr."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    from tqdm import tqdm

    bar = tqdm(total=len(runners) * (warmup + repeats), desc="latency", unit="call", disable=not progress)
    for run in runners.values():
        for _ in range(warmup):
            run()
            bar.update()
    times: dict[str, list[float]] = {name: [] for name in runners}

    def timed(name, run):
        start = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - start)
        bar.update()

    if interleave:
        for _ in range(repeats):
            for name, run in runners.items():
                timed(name, run)
    else:
        for name, run in runners.items():
            for _ in range(repeats):
                timed(name, run)
    bar.close()
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


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """{"model_name", "isa": {flag: True}} for the ISA_FLAGS and amx_* flags the (first) CPU reports: what the int8
    and fp32 kernels could use. Without a /proc/cpuinfo (not Linux) "isa" is {} and the name is the platform's."""
    path = Path(cpuinfo)
    fields: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                break   # End of the first processor's block.
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    flags = fields.get("flags", "").split()
    return {"model_name": fields.get("model name") or platform.processor() or platform.machine(),
            "isa": {f: True for f in flags if f in ISA_FLAGS or f.startswith("amx")}}


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
