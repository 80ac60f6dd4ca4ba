"""metrics/quantize.json (stage quantize) and metrics/quantize_student.json (stage quantize_student): the fidelity of
the static int8 models against their fp32 source, per engine, and the float-site search that chose them.

Only what quantization determines is here. The bytes, parameter counts, MACs and latency of the int8 files
(models/quantized*/int8.onnx, int8_torch.safetensors, float.onnx) are the account stage's (`artifacts.account`).
PSNRs are in dB over images in [-1, 1] (peak-to-peak 2), int8 vs the fp32 source on quantize.fidelity_seeds at
quantize.truncation, averaged over the latents. A PSNR that is not finite (NaN images: JSON has neither NaN nor inf;
`compress.quantize.psnr` floors the MSE, so identical images give a large finite value) is written as null, never as a
stand-in number; a null PSNR never meets the target.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Artifact

ENGINE_RUNTIMES = {"onnxruntime": ("onnxruntime_int8", "openvino_int8"), "torch": ("torch_int8",)}
"""quantize.engine -> the keys of `psnr_db` measured on that engine's file: int8.onnx runs on ONNX Runtime and on
OpenVINO, int8_torch.safetensors on PyTorch's quantized kernels."""


@dataclasses.dataclass
class QuantizeRecord(Artifact):
    PRODUCER: ClassVar[str] = "quantize"

    operating_point: dict[str, float]
    """{"prune_amount": prune.amount} for stage quantize (0.0 = the dense prune.base); {} for quantize_student, whose
    source is models/student.safetensors."""

    psnr_db: dict[str, float | None]
    """Mean int8-vs-fp32 PSNR per runtime: "onnxruntime_int8" and "openvino_int8" (int8.onnx), "torch_int8"
    (int8_torch.safetensors)."""

    psnr_db_min: dict[str, float | None]
    """The worst latent's PSNR, same keys as `psnr_db`."""

    psnr_target_db: float
    """quantize.min_psnr: the float-site search keeps convs float until the simulated PSNR reaches it; the stage fails
    when the quantize.engine file misses it (and warns for the other engine)."""

    psnr_meets_target: dict[str, int]
    """1 when `psnr_db[k] >= psnr_target_db`, else 0 (also for null), per `psnr_db` key."""

    simulated_psnr_db: dict[str, float | None]
    """The fake-quant simulator's PSNR (ONNX Runtime's int8 arithmetic in torch): "chosen" for the selected float
    sites, "all_int8" with every site int8 except quantize.keep_float's (each null if not finite)."""

    all_int8: dict[str, float | int]
    """The trade-off's other end, measured on ONNX Runtime: {"onnxruntime_int8_psnr_db", "int8_onnx_bytes"} of an
    int8.onnx built with every conv site int8, quantize.keep_float's too (a scratch file, not kept, so its bytes are measured here); {} when the
    search kept no site float (the chosen model is then that model)."""

    sites: dict[str, float | int]
    """Conv sites of the source: "total", "int8", "float" (counts) and "int8_mac_fraction" (MACs in int8 sites over
    all conv-site MACs, analytic, `models.macs`)."""

    tradeoff_simulated_psnr_db: dict[str, float | None]
    """The search curve: "float_sites_<k>" -> simulated PSNR with the k most sensitive sites float (null if not
    finite)."""

    num_fidelity_latents: int
    """len(quantize.fidelity_seeds): the latents every PSNR above averages over."""

    def engine_psnr(self, engine: str) -> float | None:
        """Mean PSNR of the quantize.engine file on its own runtime (ONNX Runtime for int8.onnx)."""
        return self.psnr_db[ENGINE_RUNTIMES[engine][0]]
