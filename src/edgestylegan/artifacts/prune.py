"""metrics/prune/<amount>.json, written by stage prune@<amount>: the sparsity of one pruned model.

Only what pruning itself determines is here. The pruned file's bytes, parameter and non-zero counts and MACs are
the account stage's (`artifacts.account`), measured there from the stored file like every other variant's.
The per-tensor table is reports/prune/<amount>_layers.csv (tensor, params, nonzero, zeros, sparsity).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from .base import Artifact

SCOPES = ("targeted", "synthesis", "generator")


@dataclasses.dataclass
class PruneRecord(Artifact):
    PRODUCER: ClassVar[str] = "prune"

    amount: float
    """The pruning amount (one entry of prune.amounts): the fraction of the targeted weights removed."""

    sparsity: dict[str, float]
    """Bitwise-zero fraction, counted from the stored weights, per scope (`SCOPES`):
    `targeted` over the tensors prune.targets selects, `synthesis` over all synthesis-network parameters (the earlier
    study's denominator; buffers excluded), `generator` over every parameter (synthesis + mapping)."""

    allocation: str
    """prune.allocation that split the amount over the targeted tensors (per-tensor zeros in the layers CSV)."""

    recovery: str
    """prune.recovery: none | reconstruct | distill."""

    values: str
    """prune.values: the dtype of the stored weights (float32 | int8: per-row symmetric int8, noise maps int8)."""

    group_sparsity: dict[str, float]
    """Sparsity the allocation gave each kind of layer (`compress.prune.layer_group`: modulation, depthwise,
    pointwise, conv3x3, head), over that kind's targeted weights."""

    mean_layer_error: float | None
    """Mean over the pruned tensors of the relative output error ||W X - W' X||^2 / ||W X||^2 on the calibration
    inputs after reconstruction (None with recovery = none)."""

    int8_levels: dict[str, int] | None
    """values = int8: {levels per row (str): stored non-zero targeted weights} (prune.int8_error_ratio chooses each
    tensor's levels, `compress.reconstruct.weight_levels_for_error`; per tensor in the layers CSV); None with float32."""

    seconds: dict[str, float]
    """Wall time of the stage's parts: allocation, reconstruct, distill (0 where not run)."""

    distill: dict | None
    """recovery = distill: the fine-tuning's statistics (steps, losses, time); None otherwise."""

    earlier_study_recipe: dict[str, dict[str, float]]
    """The earlier study's recipe (targets=edgestylegan, global L1 at `amount`), measured by really pruning copies:
    {"this_model": .., "upstream_parameter_set": ..}, each {"targeted_params", "synthesis_params" (ints: the
    recipe's denominators on that parameter set), "sparsity_targeted", "sparsity_synthesis"}. `upstream_parameter_set`
    is this model's tensors laid out as the upstream MobileStyleGAN module tree (`models.macs.upstream_parameter_set`),
    the set the earlier study pruned."""


@dataclasses.dataclass
class SensitivityProfile(Artifact):
    """reports/prune/sensitivity.json, written by stage prune_profile, read by every prune@<amount> whose
    prune.allocation is `sensitivity`: each targeted tensor's relative output error (on the dense model's calibration
    inputs) after OBS pruning of that tensor alone to each sparsity in `levels`."""

    PRODUCER: ClassVar[str] = "prune_profile"

    base: str
    """The profiled model file (prune.base)."""

    levels: list[float]
    layers: dict[str, dict]
    """{tensor name: {"params": int, "group": str, "error": [one per level]}}."""
