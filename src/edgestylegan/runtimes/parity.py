"""The one parity policy for running a model on a faster runtime than its PyTorch definition.

A candidate runtime (OpenVINO, ONNX Runtime) is used only after its output on a probe input matched the reference
(PyTorch) within a tolerance. On a mismatch: if the user asked for that runtime explicitly, the stage fails
(`UserError` naming the runtime, the difference and the knob); if it was chosen automatically, the reference runtime
is used instead and the reason is returned in the `ParityRecord`, which the stage writes to its metrics and the report
shows. Never silent, never printed-and-forgotten.
"""
from __future__ import annotations

import dataclasses

import torch

from ..errors import UserError

OPENVINO_F32 = "openvino-cpu-f32"
"""The runtime name of a model compiled by OpenVINO for CPU at f32 inference precision."""


@dataclasses.dataclass(frozen=True)
class ParityRecord:
    what: str                      # e.g. "evaluation generator", "EfficientNet-Lite0 features", "teacher renderer"
    requested: str                 # auto | the runtime name the params asked for
    runtime: str                   # the runtime in use after the check
    max_abs: float | None          # max |candidate - reference| on the probe (None: no check was needed)
    tolerance: float | None
    fallback_reason: str | None    # set when `auto` fell back to the reference runtime

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def max_abs_difference(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    return float((candidate.float() - reference.float()).abs().max())


def decide(what: str, requested: str, candidate: str, reference: str, max_abs: float, tolerance: float,
           knob: str, reference_choice: str | None = None, tolerance_knob: str | None = None) -> ParityRecord:
    """Apply the policy to a measured difference. `knob` names the param that selects the runtime,
    `reference_choice` its value that selects the reference (default: `reference`), `tolerance_knob` the param
    holding `tolerance` (for the error message)."""
    if max_abs <= tolerance:
        return ParityRecord(what, requested, candidate, max_abs, tolerance, None)
    reason = (f"{what}: {candidate} differs from {reference} by {max_abs:.3g} > {tolerance:.3g}")
    if requested != "auto":
        loosen = f"raise {tolerance_knob}" if tolerance_knob else "raise the tolerance"
        raise UserError(f"{reason}; {knob} = {requested} was asked for explicitly: set it to auto (falls back to "
                        f"{reference}) or {reference_choice or reference}, or {loosen} if the difference is "
                        f"acceptable")
    return ParityRecord(what, requested, reference, max_abs, tolerance, reason)


def unchecked(what: str, requested: str, runtime: str) -> ParityRecord:
    """The reference runtime itself (or a runtime with nothing to compare against) is in use."""
    return ParityRecord(what, requested, runtime, None, None, None)
