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

    earlier_study_recipe: dict[str, dict[str, float]]
    """The earlier study's recipe (targets=edgestylegan, global L1 at `amount`), measured by really pruning copies:
    {"this_model": .., "upstream_parameter_set": ..}, each {"targeted_params", "synthesis_params" (ints: the
    recipe's denominators on that parameter set), "sparsity_targeted", "sparsity_synthesis"}. `upstream_parameter_set`
    is this model's tensors laid out as the upstream MobileStyleGAN module tree (`models.macs.upstream_parameter_set`),
    the set the earlier study pruned."""
