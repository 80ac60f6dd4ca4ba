"""StyleGAN2 residual discriminator (Karras et al. 2020, config-e/f "resnet" D), used for the distillation GAN loss.

Equalized learning rate (weights N(0, 1), scaled by 1/sqrt(fan_in) at run time), leaky ReLU 0.2 with gain sqrt(2),
[1, 3, 3, 1] blur before every stride-2 conv, residual blocks scaled by 1/sqrt(2), minibatch standard deviation
(group 4, 1 feature) at 4x4, no final activation (logits). Width per resolution r: min(channel_max, channel_base / r)
(config-f: base 32768, max 512).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import filter_2d, kernel_2d


class EqualConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True, activate: bool = True, blur: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.activate = activate
        # Stride-2 convs blur first; pad so that the output is exactly half the input (rosinality's padding rule).
        p = (4 - 2) + (kernel_size - 1) if blur else 0
        self.blur_pad = ((p + 1) // 2, p // 2)
        self.padding = 0 if blur else kernel_size // 2
        if blur:
            self.register_buffer("blur_kernel", kernel_2d(), persistent=False)
        else:
            self.blur_kernel = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur_kernel is not None:
            x = filter_2d(x, self.blur_kernel, self.blur_pad)
        x = F.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.activate else x


class EqualLinear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, activate: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1 / math.sqrt(in_dim)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias)
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.activate else x


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = EqualConv2d(in_channels, in_channels, 3)
        self.conv2 = EqualConv2d(in_channels, out_channels, 3, stride=2, blur=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, stride=2, bias=False, activate=False, blur=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """image [B, 3, R, R] in [-1, 1] -> logits [B, 1]."""

    def __init__(self,
                 resolution: int,              # Input image size (power of two >= 8).
                 channel_base: int = 32768,    # Width at resolution r is min(channel_max, channel_base // r).
                 channel_max: int = 512,       # Widest layer.
                 mbstd_group: int = 4):        # Minibatch-stddev group size (clipped to the batch).
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"discriminator resolution must be a power of two >= 8, got {resolution}")
        width = lambda r: max(1, min(channel_max, channel_base // r))  # noqa: E731
        self.resolution = resolution
        self.mbstd_group = mbstd_group
        self.from_rgb = EqualConv2d(3, width(resolution), 1)
        self.blocks = nn.ModuleList()
        r = resolution
        while r > 4:
            self.blocks.append(ResBlock(width(r), width(r // 2)))
            r //= 2
        c = width(4)
        self.final_conv = EqualConv2d(c + 1, c, 3)
        self.final_linear = EqualLinear(c * 16, c, activate=True)
        self.out = EqualLinear(c, 1, activate=False)

    def _minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        group = min(b, self.mbstd_group)
        while b % group:  # The batch must split into equal groups.
            group -= 1
        y = x.reshape(group, -1, c, h, w)                       # [G, B/G, C, H, W]
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()       # [B/G, C, H, W]
        y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(group, 1, h, w)  # [B, 1, H, W]
        return torch.cat((x, y), dim=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != self.resolution or img.shape[-2] != self.resolution:
            raise ValueError(f"discriminator built for {self.resolution} px got {tuple(img.shape)}")
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.final_conv(self._minibatch_stddev(x))
        return self.out(self.final_linear(x.flatten(1)))
