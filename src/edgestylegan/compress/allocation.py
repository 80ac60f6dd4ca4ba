"""How many weights each targeted tensor loses: the pruning amount as one budget over all of them.

Every allocation returns {tensor name: zeros} whose sum is exactly round(amount * targeted weights).

* ``uniform``: the same fraction of every tensor (largest remainders settle the rounding).
* ``global``: one magnitude threshold across all tensors (the earlier study's recipe).
* ``lamp``: one threshold on LAMP scores (Lee et al. 2021): w_u^2 / sum of w_v^2 over the tensor's weights at least as
  large as w_u, so every tensor keeps its largest weights whatever its scale.
* ``sensitivity``: from a measured profile (`compress.reconstruct.sensitivity_profile`: each layer's relative output
  error after OBS pruning at `LEVELS`), the zeros go where the error grows least: the greedy equal-marginal-cost split
  of the budget over the piecewise-linear error curves (exact for convex curves).
"""
from __future__ import annotations

import heapq
import math

import torch

from ..config import SENSITIVITY_LEVELS as LEVELS

ALLOCATIONS = ("uniform", "global", "lamp", "sensitivity")


def budget(numels: dict[str, int], amount: float) -> int:
    return round(amount * sum(numels.values()))


def uniform(numels: dict[str, int], amount: float) -> dict[str, int]:
    exact = {name: amount * n for name, n in numels.items()}
    zeros = {name: math.floor(v) for name, v in exact.items()}
    short = budget(numels, amount) - sum(zeros.values())
    for name in sorted(exact, key=lambda k: exact[k] - zeros[k], reverse=True)[:short]:
        zeros[name] += 1
    return zeros


def _threshold(scores: dict[str, torch.Tensor], count: int) -> dict[str, int]:
    """Zeros per tensor when the `count` lowest scores over all tensors are removed (ties broken by order)."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    owner = torch.cat([torch.full((scores[n].numel(),), i) for i, n in enumerate(names)])
    chosen = owner[torch.argsort(flat, stable=True)[:count]]
    per = torch.bincount(chosen, minlength=len(names))
    return {n: int(per[i]) for i, n in enumerate(names)}


def global_magnitude(weights: dict[str, torch.Tensor], amount: float) -> dict[str, int]:
    numels = {n: w.numel() for n, w in weights.items()}
    return _threshold({n: w.detach().abs() for n, w in weights.items()}, budget(numels, amount))


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    sq = weight.detach().flatten().to(torch.float64).square()
    order = torch.argsort(sq, stable=True)
    sorted_sq = sq[order]
    tail = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])   # sum over weights at least this large
    scores = torch.empty_like(sq)
    scores[order] = sorted_sq / tail.clamp_min(1e-300)
    return scores


def lamp(weights: dict[str, torch.Tensor], amount: float) -> dict[str, int]:
    numels = {n: w.numel() for n, w in weights.items()}
    return _threshold({n: lamp_scores(w) for n, w in weights.items()}, budget(numels, amount))


def by_sensitivity(numels: dict[str, int], profile: dict[str, list[float]], amount: float,
                   levels: tuple[float, ...] = LEVELS) -> dict[str, int]:
    """Greedy over segments of each tensor's error-vs-sparsity curve: the next zeros go to the segment with the
    smallest error increase per removed weight; the last segment taken is cut to hit the budget exactly."""
    missing = set(numels) - set(profile)
    if missing:
        raise ValueError(f"the sensitivity profile has no curve for {sorted(missing)}")
    remaining = budget(numels, amount)
    zeros = dict.fromkeys(numels, 0)
    position = dict.fromkeys(numels, 0)                       # index of the level each tensor has reached

    def segment(name):
        i = position[name]
        if i + 1 >= len(levels):
            return None
        k0, k1 = round(levels[i] * numels[name]), round(levels[i + 1] * numels[name])
        slope = max(profile[name][i + 1] - profile[name][i], 0.0) / max(k1 - k0, 1)
        return slope, k1 - k0

    heap = [(s[0], name) for name in numels if (s := segment(name))]
    heapq.heapify(heap)
    while remaining > 0 and heap:
        _slope, name = heapq.heappop(heap)
        take = min(segment(name)[1], remaining)
        zeros[name] += take
        remaining -= take
        position[name] += 1
        if (s := segment(name)) is not None:
            heapq.heappush(heap, (s[0], name))
    if remaining > 0:
        raise ValueError(f"amount {amount} exceeds the profile's largest level {levels[-1]}")
    return zeros


def allocate(allocation: str, weights: dict[str, torch.Tensor], amount: float,
             profile: dict[str, list[float]] | None = None) -> dict[str, int]:
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}; choose one of {ALLOCATIONS}")
    numels = {n: w.numel() for n, w in weights.items()}
    if allocation == "uniform":
        return uniform(numels, amount)
    if allocation == "global":
        return global_magnitude(weights, amount)
    if allocation == "lamp":
        return lamp(weights, amount)
    if profile is None:
        raise ValueError("allocation 'sensitivity' needs a sensitivity profile")
    return by_sensitivity(numels, profile, amount)
