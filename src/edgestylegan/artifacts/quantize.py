"""metrics/quantize.json (stage quantize) and metrics/quantize_student.json (stage quantize_student): the fidelity of
the int8 models against their fp32 source, per engine, and where the int8 model's time goes.

Only what quantization determines is here. The bytes, parameter counts, MACs and latency of the files
(models/quantized*/int8.xml + int8.bin, int8.onnx, float.onnx) are the account stage's (`artifacts.size`).
PSNRs are in dB over images in [-1, 1] (peak-to-peak 2) at the model's full resolution, int8 vs the fp32 source
(its float.onnx on OpenVINO f32 once that matched PyTorch on the first latent: `fp32_reference`), on quantize.fidelity_samples held-out latents (seeds quantize.fidelity_seed ..; disjoint from calibration
and validation, checked by the params schema). A PSNR that is not finite (NaN images: JSON has neither NaN nor inf)
is written as null, never as a stand-in number; a null PSNR never meets the target.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Artifact

ENGINE_RUNTIMES = {"openvino": "openvino_int8", "onnxruntime": "onnxruntime_int8"}
"""quantize.engine -> the runtime its file runs on (and the key of `psnr_db`): int8.xml on OpenVINO, int8.onnx on
ONNX Runtime."""


@dataclasses.dataclass
class QuantizeRecord(Artifact):
    PRODUCER: ClassVar[str] = "quantize"

    operating_point: dict[str, float]
    """{"prune_amount": prune.amount} for stage quantize (0.0 = the dense prune.base); {} for quantize_student, whose
    source is models/student.safetensors."""

    engine: str
    """quantize.engine: the file that is the `int8` / `student-int8` variant downstream."""

    recipe: dict
    """The quantize params that shaped the int8 models (NNCF levers, ONNX Runtime calibration, latent sets)."""

    psnr_db: dict[str, float | None]
    """Mean int8-vs-fp32 PSNR over the held-out latents per runtime (`ENGINE_RUNTIMES` values)."""

    psnr_db_min: dict[str, float | None]
    """The worst held-out latent's PSNR, same keys."""

    psnr_db_per_latent: dict[str, list[float | None]]
    """Every held-out latent's PSNR, in seed order, same keys."""

    psnr_target_db: float
    """quantize.min_psnr: the stage fails when the quantize.engine file's mean misses it (and warns for the other)."""

    psnr_meets_target: dict[str, int]
    """1 when `psnr_db[k] >= psnr_target_db`, else 0 (also for null), per `psnr_db` key."""

    num_fidelity_latents: int

    fp32_reference: dict
    """`runtimes.parity.ParityRecord` of the fp32 images the PSNRs are against: float.onnx on OpenVINO f32 when its
    first held-out image matched the PyTorch source within the tolerance, else the PyTorch source."""

    openvino_profile: dict[str, dict]
    """OpenVINO CPU performance counters of one batch-1 call, "fp32" (float.onnx) and "int8" (int8.xml):
    `runtimes.openvino_profile.summary` (conv MACs, the share that ran in int8 kernels, time per layer type and
    precision). Per-node rows: reports/quantize*/layers.csv."""

    quantize_seconds: dict[str, float]
    """Wall time of each engine's quantization (calibration included), and of the cross-layer equalization before
    the export (`equalize`, when quantize.cle_alpha is on)."""

    cpu: dict
    """The CPU the models were quantized and measured on (model name, ISA flags: int8 kernels differ between AVX2,
    AVX-512, VNNI and AMX machines)."""

    def engine_psnr(self, engine: str) -> float | None:
        """Mean PSNR of the quantize.engine file on its own runtime."""
        return self.psnr_db[ENGINE_RUNTIMES[engine]]
