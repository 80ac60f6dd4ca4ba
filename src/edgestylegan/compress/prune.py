"""One-shot unstructured pruning of the synthesis network (L1 magnitude or random; global or per-layer).

Target sets (which weight tensors are pruned):

* ``all``: every ``nn.Conv2d`` and ``nn.Linear`` weight of the synthesis network: the 3x3 conv, the depthwise
  and pointwise convs of every block, the 1x1 frequency heads and all modulation linears.
* ``edgestylegan``: exactly the earlier EdgeStyleGAN study's selection (mobilestylegan-ir-spec.md section 6). Its
  code pruned only tensors literally named ``weight`` in the upstream module tree: the modulation ``nn.Linear``
  weights and the ``ModulatedConv2d.weight`` of the 3x3 ``conv1`` and of the frequency heads. The upstream depthwise
  (``weight_dw``) and pointwise (``weight_permute``) kernels were never pruned; in our module tree they are the
  ``depthwise`` / ``pointwise`` convs of ``ModulatedDWConv2d``, so they are left out here.

Pruning uses ``torch.nn.utils.prune`` (as the earlier study did), then makes the masks permanent. Pruned entries are
stored as +0.0 (a masked negative weight would otherwise become -0.0), so "zero" means bitwise zero everywhere.
Biases, the constant input, noise strengths and the mapping network are never pruned.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import io

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from ..models.macs import upstream_parameter_set
from ..models.mobilestylegan import Generator, ModulatedConv2d

METHODS = ("l1", "random")
SCOPES = ("global", "layer")
TARGETS = ("all", "edgestylegan")


def select_targets(gen: Generator, targets: str) -> dict[str, tuple[nn.Module, str]]:
    """Name (as in `gen.state_dict()`) -> (module, attribute) of every weight tensor in the target set, in order."""
    if targets not in TARGETS:
        raise ValueError(f"unknown pruning targets {targets!r}; choose one of {TARGETS}")
    head_convs = set()
    if targets == "edgestylegan":
        head_convs = {id(m.conv) for m in gen.synthesis.modules() if isinstance(m, ModulatedConv2d)}
    selected = {}
    for name, module in gen.synthesis.named_modules():
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d)
                                             and (targets == "all" or id(module) in head_convs)):
            selected[f"synthesis.{name}.weight"] = (module, "weight")
    return selected


def prune_generator(gen: Generator, amount: float, method: str = "l1", scope: str = "global",
                    targets: str = "all", seed: int = 0) -> list[str]:
    """Prune `gen` in place and make the masks permanent. Returns the names of the pruned tensors.

    global: one threshold across all target tensors (round(amount * total) weights removed in all);
    layer: round(amount * numel) weights removed from every target tensor.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    if method not in METHODS or scope not in SCOPES:
        raise ValueError(f"method must be one of {METHODS} and scope one of {SCOPES}, got {method!r}, {scope!r}")
    selected = select_targets(gen, targets)
    params = list(selected.values())
    pruning_method = tprune.L1Unstructured if method == "l1" else tprune.RandomUnstructured
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if scope == "global":
            tprune.global_unstructured(params, pruning_method=pruning_method, amount=amount)
        else:
            for module, attr in params:
                pruning_method.apply(module, attr, amount=amount)
    with torch.no_grad():
        for module, attr in params:
            tprune.remove(module, attr)
            weight = getattr(module, attr)
            weight.masked_fill_(weight == 0, 0.0)   # -0.0 -> +0.0 (bitwise zero)
    return list(selected)


@dataclasses.dataclass
class _Count:
    numel: int = 0
    zeros: int = 0

    def add(self, t: torch.Tensor) -> None:
        self.numel += t.numel()
        self.zeros += int((t == 0).sum())

    def as_dict(self) -> dict:
        return {"params": self.numel, "nonzero": self.numel - self.zeros, "zeros": self.zeros,
                "sparsity": self.zeros / self.numel if self.numel else 0.0}


def sparsity_report(gen: Generator, target_names: list[str]) -> dict:
    """Zeros counted from the weights themselves (not from masks).

    Returns {"targeted": .., "synthesis": .., "generator": .., "layers": {name: ..}} where each entry has params,
    nonzero, zeros and sparsity. `synthesis` is the denominator the earlier study used (all synthesis-net
    parameters; buffers excluded); `generator` adds the mapping network.
    """
    state = dict(gen.named_parameters())
    targeted, synthesis, whole = _Count(), _Count(), _Count()
    layers = {}
    for name, param in state.items():
        whole.add(param.detach())
        if name.startswith("synthesis."):
            synthesis.add(param.detach())
    for name in target_names:
        c = _Count()
        c.add(state[name].detach())
        targeted.add(state[name].detach())
        layers[name] = c.as_dict()
    return {"targeted": {**targeted.as_dict(), "tensors": len(target_names)}, "synthesis": synthesis.as_dict(),
            "generator": whole.as_dict(), "layers": layers}


def earlier_study_sparsity(gen: Generator, amount: float) -> dict:
    """The earlier study's recipe (targets=edgestylegan, global L1) on `gen` and on its upstream parameter set.

    Returns {"this_model": {...}, "upstream_parameter_set": {...}} with sparsity over the targeted tensors and over all
    synthesis parameters (the study's denominator), each measured by really pruning a copy.
    """
    out = {}
    for key, model in (("this_model", copy.deepcopy(gen)), ("upstream_parameter_set", upstream_parameter_set(gen))):
        names = prune_generator(model, amount, "l1", "global", "edgestylegan")
        rep = sparsity_report(model, names)
        out[key] = {"targeted_params": rep["targeted"]["params"], "synthesis_params": rep["synthesis"]["params"],
                    "sparsity_targeted": rep["targeted"]["sparsity"],
                    "sparsity_synthesis": rep["synthesis"]["sparsity"]}
        del model
    return out


def layers_csv(layers: dict[str, dict]) -> str:
    """The per-tensor table of `sparsity_report(...)["layers"]` as CSV text (tensor, params, nonzero, zeros,
    sparsity)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["tensor", "params", "nonzero", "zeros", "sparsity"])
    for name, row in layers.items():
        writer.writerow([name, row["params"], row["nonzero"], row["zeros"], f"{row['sparsity']:.6f}"])
    return buf.getvalue()
