"""The original random-face IR run by the OpenVINO runtime: parity oracle and latency anchor."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.ir_reader import random_face_data_dir


class OpenVINOGenerator:
    """Mapping + synthesis IR compiled for CPU. `precision` f32 for parity/fp32 anchor (the CPU default is bf16)."""

    def __init__(self, data_dir: Path | None = None, precision: str = "f32", num_threads: int | None = None):
        import openvino as ov

        data_dir = Path(data_dir) if data_dir else random_face_data_dir()
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        core = ov.Core()
        self.mapping = core.compile_model(core.read_model(data_dir / "MappingNetwork.xml"), "CPU", config)
        self.synthesis = core.compile_model(core.read_model(data_dir / "SynthesisNetwork.xml"), "CPU", config)
        self.precision = precision

    def style(self, z: np.ndarray) -> np.ndarray:
        """z [B, 512] -> w [B, 512], one IR call per row (the IR has a static batch of 1)."""
        return np.concatenate([self.mapping(row[None].astype(np.float32))[0] for row in z])

    def synthesize(self, w: np.ndarray) -> np.ndarray:
        """w [B, 512] -> images [B, 3, 1024, 1024] float32, unclamped."""
        return np.concatenate([self.synthesis(row[None].astype(np.float32))[0] for row in w])
