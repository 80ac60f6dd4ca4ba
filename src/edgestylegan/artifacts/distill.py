"""metrics/distill.json, written by stage distill: how closely the distilled student matches its teacher.

Only what distillation determines is here. The student file's bytes, parameter counts, MACs and latency are the
account stage's (`artifacts.account`), measured there like every other variant's; its FD/KID are evaluate@student's.
PSNRs are in dB over images in [-1, 1] (peak-to-peak 2), student vs the teacher's images at the student resolution,
per latent, on the pool's held-out split (distill.val_size latents, distill.val_seed) at distill.truncation.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Artifact, ArtifactError

VAL_KEYS = ("psnr_db", "psnr_db_min", "l1", "l2", "num_latents", "truncation")
TRAIN_KEYS = ("steps", "seconds", "resumed_from", "loss_total_first", "loss_total_last", "pool_size")
STUDENT_KEYS = ("resolution", "params_synthesis")
PARITY_KEYS = ("what", "requested", "runtime", "max_abs", "tolerance", "fallback_reason")


@dataclasses.dataclass
class DistillRecord(Artifact):
    PRODUCER: ClassVar[str] = "distill"

    val: dict[str, float]
    """The exported student on the held-out latents: "psnr_db" (mean over latents), "psnr_db_min" (worst latent),
    "l1", "l2" (mean absolute / squared pixel error), "num_latents", "truncation"."""

    train: dict[str, float]
    """"steps" (optimiser steps per rank), "seconds" (wall time of the training loop, evaluation excluded, summed over
    resumed segments), "resumed_from" (the step an interrupted run resumed at; 0 for a fresh run),
    "loss_total_first" / "loss_total_last" (weighted total loss of the first / last logged window),
    "pool_size" (training latents in the pool; 0 with distill.targets = online)."""

    student: dict[str, int]
    """"resolution" (output px) and "params_synthesis" (parameters of the exported synthesis network: what
    distillation trained; the account stage counts the whole file)."""

    val_at_init: dict[str, float] | None
    """{"psnr_db"} of the student before the first optimiser step (after the head initialisation), on the same
    latents as `val`; null when the run logged no step-0 evaluation."""

    renderer_parity: dict
    """The teacher renderer's `runtimes.parity.ParityRecord` (what, requested, runtime, max_abs, tolerance,
    fallback_reason) from the distill_pool stage: which runtime rendered the pool's teacher images, and, when
    OpenVINO was a candidate, its max |difference| from PyTorch on the probe image and why it was not used."""

    def __post_init__(self):
        for name, keys in (("val", VAL_KEYS), ("train", TRAIN_KEYS), ("student", STUDENT_KEYS),
                           ("renderer_parity", PARITY_KEYS)):
            missing = [k for k in keys if k not in getattr(self, name)]
            if missing:
                raise ArtifactError(f"DistillRecord.{name} lacks {missing}; rerun `dvc repro {self.PRODUCER}`")
        if self.val_at_init is not None and "psnr_db" not in self.val_at_init:
            raise ArtifactError(f"DistillRecord.val_at_init lacks psnr_db; rerun `dvc repro {self.PRODUCER}`")
