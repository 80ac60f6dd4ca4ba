"""metrics/teacher.json, written by stage fetch_teacher: the teacher's size and its parity with the original IR.

The teacher runs in PyTorch everywhere downstream; the parity entry is the gate that the weights read from the
random-face OpenVINO IR reproduce that IR (the stage fails above teacher.parity_tolerance), not a runtime choice.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Artifact


@dataclasses.dataclass
class TeacherRecord(Artifact):
    PRODUCER: ClassVar[str] = "fetch_teacher"

    params: dict[str, int]
    """Parameter counts of the loaded generator: {"mapping": .., "synthesis": ..} (buffers excluded)."""

    resolution: int
    """Output size in pixels (1024 for the random-face teacher)."""

    parity: dict[str, float | int] | None = None
    """teacher.source = random-face only (null otherwise): ours (PyTorch f32) vs the IR on OpenVINO f32, both given the
    same w, over the 1024^2 images of teacher.parity_seeds at teacher.parity_truncation. Keys: "max_abs",
    "mean_abs" (pixel differences, images nominal [-1, 1]), "mapping_max_abs" (|w ours - w IR|, untruncated),
    "openvino_vs_float64_max_abs" (the IR's own f32 round-off against ours in float64: the floor any f32
    implementation can reach), "num_latents", "truncation", "tolerance" (teacher.parity_tolerance)."""
