"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020, "color,translation,cutout").

Every op is differentiable with respect to the image, so the generator's adversarial gradient flows through it.
Randomness comes from an explicit `torch.Generator`, so a resumed run draws the same augmentations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import AUGMENT_POLICIES

POLICIES = AUGMENT_POLICIES


def parse_policy(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {list(POLICIES)}")
    return names


def _rand(shape, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=gen.device if gen is not None else "cpu").to(x.device, x.dtype)


def _randint(low: int, high: int, shape, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=gen, device=gen.device if gen is not None else "cpu").to(x.device)


def color(x: torch.Tensor, gen=None) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1), x, gen) - 0.5)                                   # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand((b, 1, 1, 1), x, gen) * 2) + mean                     # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((b, 1, 1, 1), x, gen) + 0.5) + mean                # contrast


def translation(x: torch.Tensor, gen=None, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ratio * size pixels, zero fill."""
    b, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sy, sy + 1, (b, 1, 1), x, gen)
    tx = _randint(-sx, sx + 1, (b, 1, 1), x, gen)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    gy = (gy + ty + 1).clamp(0, h + 1)
    gx = (gx + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)                            # [B, H+2, W+2, C]
    return padded[gb, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen=None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of side ratio * size at a random place per image."""
    b, c, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _randint(0, h + (1 - ch % 2), (b, 1, 1), x, gen)
    ox = _randint(0, w + (1 - cw % 2), (b, 1, 1), x, gen)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gy = (gy + oy - ch // 2).clamp(0, h - 1)
    gx = (gx + ox - cw // 2).clamp(0, w - 1)
    mask = torch.ones(b, h, w, device=x.device, dtype=x.dtype)
    mask[gb, gy, gx] = 0
    return x * mask[:, None]


def flip(x: torch.Tensor, gen=None) -> torch.Tensor:
    keep = (_rand((x.shape[0], 1, 1, 1), x, gen) < 0.5).to(x.dtype)
    return keep * x + (1 - keep) * x.flip(3)


_OPS = {"color": color, "translation": translation, "cutout": cutout, "flip": flip}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], gen: torch.Generator | None = None) -> torch.Tensor:
    for name in policy:
        x = _OPS[name](x, gen)
    return x.contiguous()
