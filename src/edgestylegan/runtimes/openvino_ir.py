"""The original random-face IR run by the OpenVINO runtime: parity oracle and latency anchor."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ..io.ir_reader import random_face_data_dir
from ..models.mobilestylegan import Generator, latents_from_seeds
from .onnx import RowsRunner, compile_openvino


class OpenVINOGenerator:
    """Mapping + synthesis IR compiled for CPU. `precision` f32 for parity/fp32 anchor (the CPU default is bf16)."""

    def __init__(self, data_dir: Path | None = None, precision: str = "f32", num_threads: int | None = None):
        data_dir = Path(data_dir) if data_dir else random_face_data_dir()
        self.mapping = compile_openvino(data_dir / "MappingNetwork.xml", precision, num_threads)
        self.synthesis = RowsRunner(data_dir / "SynthesisNetwork.xml", precision, num_threads)
        self.precision = precision

    def style(self, z: np.ndarray) -> np.ndarray:
        """z [B, 512] -> w [B, 512], one IR call per row (the IR has a static batch of 1)."""
        return np.concatenate([self.mapping(row[None].astype(np.float32))[0] for row in z])

    def synthesize(self, w: np.ndarray) -> np.ndarray:
        """w [B, 512] -> images [B, 3, 1024, 1024] float32, unclamped (rows as `RowsRunner` runs them)."""
        return self.synthesis([{0: row[None].astype(np.float32)} for row in w])


@torch.no_grad()
def ir_parity(gen: Generator, seeds: list[int], truncation: float) -> dict:
    """Max/mean |ours - OpenVINO (f32)| on the 1024^2 image for each seed; both get the same w (ours).

    Also |OpenVINO - ours in float64|: the reference's own float32 round-off, i.e. the floor any float32
    implementation can reach (about 1e-4 on this 23-layer net with activations up to ~170).
    """
    gen64 = copy.deepcopy(gen).double()

    runtime = OpenVINOGenerator(precision="f32")
    z = latents_from_seeds(seeds, gen.config.style_dim)
    w_ours = gen.style(z, truncation)
    w_ir = runtime.style(z.numpy())
    mapping_max = float(np.abs(w_ir - gen.style(z, 1.0).numpy()).max())
    per_seed = {}
    for seed, w in zip(seeds, w_ours):
        ours = gen.synthesis(w[None]).numpy()
        ref = runtime.synthesize(w[None].numpy())
        diff = np.abs(ours - ref)
        ref_error = np.abs(gen64.synthesis(w[None].double()).numpy() - ref)
        per_seed[str(seed)] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                               "openvino_vs_float64_max_abs": float(ref_error.max())}
    return {
        "max_abs": max(v["max_abs"] for v in per_seed.values()),
        "mean_abs": float(np.mean([v["mean_abs"] for v in per_seed.values()])),
        "mapping_max_abs": mapping_max,
        "openvino_vs_float64_max_abs": max(v["openvino_vs_float64_max_abs"] for v in per_seed.values()),
        "per_seed": per_seed,
    }
