"""Unstructured pruning of the synthesis network: which tensors are targeted, masks, and sparsity counting.

How many weights each tensor loses is `compress.allocation`'s; re-fitting the survivors is `compress.reconstruct`'s.

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
from .allocation import allocate
from ..models.mobilestylegan import Generator, ModulatedConv2d

METHODS = ("l1", "random")
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


LAYER_GROUPS = ("modulation", "depthwise", "pointwise", "conv3x3", "head")


def layer_group(name: str) -> str:
    """The kind of synthesis layer a targeted weight belongs to (the roles differ: see the README's pruning part)."""
    if ".modulation." in name:
        return "modulation"
    if ".to_img" in name:
        return "head"
    for group in ("depthwise", "pointwise"):
        if f".{group}." in name:
            return group
    return "conv3x3"


def group_sparsity(layers: dict[str, dict]) -> dict[str, float]:
    """{group: zeros / params} over the tensors of `sparsity_report(...)["layers"]`."""
    totals: dict[str, list[int]] = {}
    for name, row in layers.items():
        t = totals.setdefault(layer_group(name), [0, 0])
        t[0] += row["zeros"]
        t[1] += row["params"]
    return {g: zeros / params for g, (zeros, params) in totals.items()}


def mask_prune_(selected: dict[str, tuple[nn.Module, str]], zeros: dict[str, int], method: str = "l1",
                seed: int = 0) -> None:
    """Remove exactly `zeros[name]` weights of each selected tensor (lowest |w|, or at random), masks made permanent."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pruning_method = tprune.L1Unstructured if method == "l1" else tprune.RandomUnstructured
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, (module, attr) in selected.items():
            pruning_method.apply(module, attr, amount=int(zeros[name]))
    with torch.no_grad():
        for module, attr in selected.values():
            tprune.remove(module, attr)
            weight = getattr(module, attr)
            weight.masked_fill_(weight == 0, 0.0)   # -0.0 -> +0.0 (bitwise zero)


def prune_generator(gen: Generator, amount: float, method: str = "l1", allocation: str = "uniform",
                    targets: str = "all", seed: int = 0) -> list[str]:
    """Masking only (no recovery): prune `gen` in place by an allocation that needs no calibration (uniform, global,
    lamp; `compress.allocation`). Returns the names of the pruned tensors."""
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    selected = select_targets(gen, targets)
    weights = {name: getattr(module, attr) for name, (module, attr) in selected.items()}
    mask_prune_(selected, allocate(allocation, weights, amount), method, seed)
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


def int8_levels_histogram(layers: dict[str, dict], levels: dict[str, int] | None) -> dict[str, int]:
    """{str(levels): stored non-zero weights} over the tensors of `sparsity_report(...)["layers"]` (127 where
    `levels` names none)."""
    counts: dict[str, int] = {}
    for name, row in layers.items():
        key = str((levels or {}).get(name, 127))
        counts[key] = counts.get(key, 0) + row["nonzero"]
    return dict(sorted(counts.items(), key=lambda item: int(item[0])))


def layers_csv(layers: dict[str, dict], errors: dict[str, float] | None = None,
               levels: dict[str, int] | None = None) -> str:
    """The per-tensor table of `sparsity_report(...)["layers"]` as CSV text (tensor, group, params, nonzero, zeros,
    sparsity, with `errors` the relative output error after reconstruction, with `levels` the int8 levels per row)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["tensor", "group", "params", "nonzero", "zeros", "sparsity"] + (["relative_error"] if errors else [])
                    + (["int8_levels"] if levels else []))
    for name, row in layers.items():
        writer.writerow([name, layer_group(name), row["params"], row["nonzero"], row["zeros"], f"{row['sparsity']:.6f}"]
                        + ([f"{errors[name]:.6g}"] if errors else []) + ([levels.get(name, 127)] if levels else []))
    return buf.getvalue()
