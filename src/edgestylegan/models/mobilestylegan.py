"""MobileStyleGAN (Belousov 2021) as a plain tree of standard layers.

Written from ../shared/docs/mobilestylegan-ir-spec.md. Choices that differ from the upstream parametrisation:

* Demodulation in MobileStyleGAN does not depend on the style (its `style_inv` is a frozen buffer), so it is a
  per-output-channel constant. We keep it folded into the conv weights (as the exported IR does). A model built
  from scratch folds the constant in at construction, so both start from the same function class.
* The StyledConv2d bias is added after the noise; both are additive, so it lives in the conv's own `bias`.
* Fixed noise is stored as a unit-variance map (`noise_map` buffer) times a learned scalar (`noise_strength`).
* The mapping network uses effective (equalized-lr scale and lr multiplier applied) `nn.Linear` weights.

Every convolution is an `nn.Conv2d` and every modulation an `nn.Linear`, so pruning, quantization and
distillation all operate on the same modules. Wavelet transforms live in `models.wavelets`.

`arch = "blaze"` is the BlazeStyleGAN layout (Jia et al., CVPRW 2023) on the same blocks: the last block's features
run at a quarter of the output size, and every head is an `UpToRGB` (C -> 3 x 4 x 4 channels, pixel shuffle by 4).
For a 256-px output its blocks are exactly MobileStyleGAN's first four (features 8..64 px).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .wavelets import HaarIDWT, channel_major_order, dwt_haar, idwt_haar

NoiseMode = Literal["fixed", "random", "none"]
ARCHS = ("mobilestylegan", "blaze")
TEACHER_CHANNELS = (512, 512, 512, 512, 512, 256, 128, 64)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    style_dim: int = 512                      # Width of z and w.
    mapping_layers: int = 8                   # Linear layers in the mapping network.
    resolution: int = 1024                    # Output image size; the last block's features are 1/head_factor of it.
    channels: tuple[int, ...] = TEACHER_CHANNELS  # Input/conv1 width, then the output width of every block.
    all_heads: bool = False                   # Build a head per block (needed for multi-scale distillation).
    arch: str = "mobilestylegan"              # mobilestylegan (frequency heads) | blaze (UpToRGB heads).

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {list(ARCHS)}, got {self.arch!r}")
        smallest = 4 * self.head_factor
        if self.resolution < smallest or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= {smallest} for arch {self.arch}, "
                             f"got {self.resolution}")
        if len(self.channels) < self.num_blocks + 1:
            raise ValueError(
                f"resolution {self.resolution} needs {self.num_blocks + 1} channel entries, got {len(self.channels)}"
            )
        for c in self.channels[: self.num_blocks]:
            if c % 4:
                raise ValueError(f"block input channels must be divisible by 4 (wavelet bands), got {c}")

    @property
    def head_factor(self) -> int:
        """Output image size over the last block's feature size."""
        return 4 if self.arch == "blaze" else 2

    @property
    def num_blocks(self) -> int:
        return int(math.log2(self.resolution // self.head_factor)) - 2

    @property
    def used_channels(self) -> tuple[int, ...]:
        return self.channels[: self.num_blocks + 1]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generator config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


#----------------------------------------------------------------------------


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Module):
    """z -> w: PixelNorm, then `num_layers` x (Linear, leaky ReLU 0.2, gain sqrt(2))."""

    def __init__(self, style_dim: int = 512, num_layers: int = 8):
        super().__init__()
        self.norm = PixelNorm()
        self.layers = nn.ModuleList(nn.Linear(style_dim, style_dim) for _ in range(num_layers))
        for layer in self.layers:  # Effective-weight equivalent of equalized lr with lr_mul 0.01.
            nn.init.normal_(layer.weight, std=1 / math.sqrt(style_dim))
            nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.norm(z)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * math.sqrt(2)
        return x


#----------------------------------------------------------------------------


def _init_modulation(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight)        # Upstream: plain nn.Linear, weight N(0, 1), bias 1.
    nn.init.ones_(linear.bias)


def _fold_constant_demodulation(weight: torch.Tensor, depthwise_sq_sum: torch.Tensor, scale: float) -> None:
    """Scale each output row so that upstream's style-independent demodulation would be 1 (in place).

    weight: [O, I, k, k]; depthwise_sq_sum: [I], the squared norm of a preceding depthwise kernel (ones if none).
    """
    style_inv_sq = torch.randn(weight.shape[1]).square()
    per_input = (scale**2 * style_inv_sq * depthwise_sq_sum).view(1, -1, 1, 1)
    energy = (per_input * weight.square()).sum(dim=(1, 2, 3))
    weight.mul_(torch.rsqrt(energy + 1e-8).view(-1, 1, 1, 1))


class ModulatedConv2d(nn.Module):
    """y = conv(scale * (A w + a) * x): style modulates activations, the kernel is static."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool, bias: bool):
        super().__init__()
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.modulation = nn.Linear(style_dim, in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        _init_modulation(self.modulation)
        with torch.no_grad():
            nn.init.normal_(self.conv.weight)
            if bias:
                nn.init.zeros_(self.conv.bias)
            if demodulate:
                _fold_constant_demodulation(self.conv.weight, torch.ones(in_channels), self.scale)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.modulation(w) * self.scale
        return self.conv(x * style[:, :, None, None])


class ModulatedDWConv2d(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 on style-modulated activations (demodulation folded into `pointwise`)."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int):
        super().__init__()
        self.scale = 1 / math.sqrt(in_channels * 9)
        self.modulation = nn.Linear(style_dim, in_channels)
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        _init_modulation(self.modulation)
        with torch.no_grad():
            nn.init.normal_(self.depthwise.weight)
            nn.init.normal_(self.pointwise.weight)
            nn.init.zeros_(self.pointwise.bias)
            dw_energy = self.depthwise.weight.flatten(1).square().sum(dim=1)
            _fold_constant_demodulation(self.pointwise.weight, dw_energy, self.scale)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.modulation(w) * self.scale
        return self.pointwise(self.depthwise(x * style[:, :, None, None]))


class NoiseInjection(nn.Module):
    """Adds strength * noise, broadcast over channels. `fixed` uses the stored map, `random` fresh N(0, 1)."""

    def __init__(self, size: int):
        super().__init__()
        self.noise_strength = nn.Parameter(torch.zeros(1))
        self.register_buffer("noise_map", torch.randn(1, 1, size, size))

    def forward(self, x: torch.Tensor, noise_mode: NoiseMode) -> torch.Tensor:
        if noise_mode == "none":
            return x
        if noise_mode == "fixed":
            noise = self.noise_map
        elif noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            raise ValueError(f"noise_mode must be fixed|random|none, got {noise_mode!r}")
        return x + self.noise_strength * noise


class StyledConv(nn.Module):
    """Modulated conv (+bias) -> noise -> leaky ReLU 0.2 (no gain, as in MobileStyleGAN's synthesis net)."""

    def __init__(self, conv: nn.Module, size: int):
        super().__init__()
        self.conv = conv
        self.noise = NoiseInjection(size)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode) -> torch.Tensor:
        return self.act(self.noise(self.conv(x, w), noise_mode))


class IDWTUpsample(nn.Module):
    """Modulate (no scale), read channels as packed Haar coefficients, inverse transform: C -> C/4 at 2x size."""

    def __init__(self, in_channels: int, style_dim: int):
        super().__init__()
        self.modulation = nn.Linear(style_dim, in_channels)
        self.idwt = HaarIDWT()
        _init_modulation(self.modulation)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.idwt(x * self.modulation(w)[:, :, None, None])


class FrequencyHead(nn.Module):
    """`to_img`: 1x1 modulated conv to 12 packed Haar channels (RGB x {LL, LH, HL, HH}), no demodulation; `to_rgb`
    (the inverse Haar transform) gives RGB at twice the feature size."""

    factor = 2

    def __init__(self, in_channels: int, style_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 12, 1, style_dim, demodulate=False, bias=True)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w)

    @staticmethod
    def to_rgb(raw: torch.Tensor) -> torch.Tensor:
        return idwt_haar(raw)

    @staticmethod
    def from_rgb(image: torch.Tensor) -> torch.Tensor:
        """The head output that `to_rgb` maps to `image` (the closed-form fit's target)."""
        return dwt_haar(image)


class UpToRGB(nn.Module):
    """BlazeStyleGAN's head: 1x1 modulated conv to 3 x f x f channels (no demodulation); `to_rgb` pixel-shuffles them
    into RGB at f times the feature size."""

    factor = 4

    def __init__(self, in_channels: int, style_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3 * self.factor**2, 1, style_dim, demodulate=False, bias=True)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w)

    @classmethod
    def to_rgb(cls, raw: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(raw, cls.factor)

    @classmethod
    def from_rgb(cls, image: torch.Tensor) -> torch.Tensor:
        """The head output that `to_rgb` maps to `image` (the closed-form fit's target)."""
        return F.pixel_unshuffle(image, cls.factor)


HEADS = {"mobilestylegan": FrequencyHead, "blaze": UpToRGB}


class MobileSynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, size: int, style_dim: int, head: type | None):
        super().__init__()
        quarter = in_channels // 4
        self.up = IDWTUpsample(in_channels, style_dim)
        self.conv1 = StyledConv(ModulatedDWConv2d(quarter, out_channels, style_dim), size)
        self.conv2 = StyledConv(ModulatedDWConv2d(out_channels, out_channels, style_dim), size)
        self.to_img = head(out_channels, style_dim) if head is not None else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode):
        x = self.up(x, w)
        x = self.conv1(x, w, noise_mode)
        x = self.conv2(x, w, noise_mode)
        freq = self.to_img(x, w) if self.to_img is not None else None
        return x, freq


class MobileSynthesisNetwork(nn.Module):
    """w [B, style_dim] -> image [B, 3, R, R] in nominal [-1, 1] (not clamped)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        ch = config.used_channels
        head = HEADS[config.arch]
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))
        self.conv1 = StyledConv(ModulatedConv2d(ch[0], ch[0], 3, config.style_dim, demodulate=True, bias=True), 4)
        self.to_img1 = head(ch[0], config.style_dim) if config.all_heads or config.num_blocks == 0 else None
        self.blocks = nn.ModuleList(
            MobileSynthesisBlock(ch[i], ch[i + 1], 2 ** (i + 3), config.style_dim,
                                 head if config.all_heads or i == config.num_blocks - 1 else None)
            for i in range(config.num_blocks)
        )
        # The last head's output to RGB as a module of its own (analytic MACs count the IDWT's elementwise ops).
        self.to_rgb = HaarIDWT() if config.arch == "mobilestylegan" else nn.PixelShuffle(UpToRGB.factor)

    def forward(self, w: torch.Tensor, noise_mode: NoiseMode = "fixed", return_freqs: bool = False):
        x = self.const.expand(w.shape[0], -1, -1, -1)
        x = self.conv1(x, w, noise_mode)
        freqs = [self.to_img1(x, w)] if self.to_img1 is not None else []
        for block in self.blocks:
            x, freq = block(x, w, noise_mode)
            if freq is not None:
                freqs.append(freq)
        img = self.to_rgb(freqs[-1])
        return (img, freqs) if return_freqs else img


class StyleBasedGenerator(nn.Module):
    """z -> mapping -> (truncation toward `w_avg`) -> synthesis. Subclasses set `config`, `mapping`, `synthesis`
    and register the `w_avg` buffer; `config` provides `resolution` and `style_dim`."""

    config: GeneratorConfig

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def style_dim(self) -> int:
        return self.config.style_dim

    @torch.no_grad()
    def estimate_w_avg(self, num_samples: int = 4096, seed: int = 0) -> None:
        z = torch.randn(num_samples, self.config.style_dim, generator=torch.Generator().manual_seed(seed))
        self.w_avg.copy_(self.mapping(z.to(self.w_avg.device)).mean(dim=0))

    def style(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        w = self.mapping(z)
        if truncation != 1.0:
            w = self.w_avg + truncation * (w - self.w_avg)
        return w

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noise_mode: NoiseMode = "fixed") -> torch.Tensor:
        return self.synthesis(self.style(z, truncation), noise_mode=noise_mode)


class Generator(StyleBasedGenerator):
    """MobileStyleGAN: mapping + synthesis + the truncation centre `w_avg` (estimated once, stored with the weights)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config.style_dim, config.mapping_layers)
        self.synthesis = MobileSynthesisNetwork(config)
        self.register_buffer("w_avg", torch.zeros(config.style_dim))


@torch.no_grad()
def channel_major_packing(gen: Generator) -> Generator:
    """A copy of `gen` that computes the same images (to float round-off) with every packed Haar tensor in the
    channel-major layout (see `wavelets`): the output rows of the conv that produces a block's input, the rows of the
    block's `up` modulation and the input columns of a head that reads it are permuted, and so are the rows of the
    last head (FrequencyHead); each inverse transform is then one grouped 1x1 conv and a pixel shuffle. (A non-final
    head, in `all_heads` configs, sums its permuted inputs in another order.)

    For export (`runtimes.onnx.export_onnx`): OpenVINO's CPU plugin ran the packed form's band split with its
    reference kernel and wrapped the split, the elementwise sums and the stack in layout reorders: 1024² teacher,
    batch 1, 2 threads, 2-core AVX-512 VNNI EPYC, OpenVINO f32 124.8 instead of 170.5 ms and NNCF int8 70.2 instead of
    106.4 ms against the band-major form before it (which had made f32 13-15 % faster than the packed one); the
    256-px student's f32 the same (31.9 vs 31.2 ms), its int8 18.9 instead of 20.4 ms."""
    out = copy.deepcopy(gen)
    syn = out.synthesis
    producers = [syn.conv1.conv.conv] + [block.conv2.conv.pointwise for block in syn.blocks[:-1]]
    readers = [syn.to_img1] + [block.to_img for block in syn.blocks[:-1]]
    for block, producer, head in zip(syn.blocks, producers, readers):
        order = channel_major_order(block.up.modulation.out_features)
        for t in (producer.weight, producer.bias, block.up.modulation.weight, block.up.modulation.bias):
            t.copy_(t[order])
        if head is not None:
            for t in (head.conv.modulation.weight, head.conv.modulation.bias):
                t.copy_(t[order])
            head.conv.conv.weight.copy_(head.conv.conv.weight[:, order])
        block.up.idwt = HaarIDWT(channel_major=True)
    if isinstance(syn.to_rgb, HaarIDWT):
        last = (syn.blocks[-1].to_img if len(syn.blocks) else syn.to_img1).conv.conv
        order = channel_major_order(last.out_channels)
        for t in (last.weight, last.bias):
            t.copy_(t[order])
        syn.to_rgb = HaarIDWT(channel_major=True)
    return out


def latents_from_seeds(seeds, style_dim: int = 512) -> torch.Tensor:
    """One z per seed, each from its own generator, so any image can be regenerated alone."""
    return torch.stack([torch.randn(style_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
