"""Image conversion and grids: generator output in nominal [-1, 1] -> uint8 PNGs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .io.atomic import atomic_path


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images clamped to the nominal [-1, 1] (peak-to-peak 2); the error is floored so that
    identical images give a large finite value rather than infinity."""
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).float().square().flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-20))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] float in [-1, 1] (clamped) -> [B, 3, H, W] uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="area" if images.shape[-1] > size else "bilinear",
                         **({} if images.shape[-1] > size else {"align_corners": False}))


def save_png(image_u8: torch.Tensor, path: str | Path) -> None:
    """[3, H, W] uint8 -> PNG, atomically."""
    array = image_u8.permute(1, 2, 0).cpu().numpy()
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")


def grid(images_u8: torch.Tensor, columns: int, padding: int = 2) -> torch.Tensor:
    """[N, 3, H, W] uint8 -> one [3, H', W'] uint8 mosaic, row-major, white padding."""
    n, c, h, w = images_u8.shape
    rows = -(-n // columns)
    canvas = torch.full((c, rows * (h + padding) + padding, columns * (w + padding) + padding), 255, dtype=torch.uint8)
    for i, img in enumerate(images_u8):
        r, col = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        canvas[:, y:y + h, x:x + w] = img
    return canvas
