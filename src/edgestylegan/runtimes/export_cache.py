"""Fixed torch modules (the feature-space trunks) compiled by OpenVINO from an ONNX export cached on disk.

Every evaluation stage runs the EfficientNet-Lite0 and FID-Inception trunks on OpenVINO; exporting them to ONNX
took 15-20 s of each stage on the 2-core machine (tracing Inception alone ~12 s) although those networks never
change. OpenVINO's own model cache (CACHE_DIR) starts from a model it has already read, i.e. after the export, so
the export itself is cached here, under `cache_dir()`, keyed by what determines it: the torch version, the opset, the
example's shapes and dtypes, the module's structure (`repr`) and wrapper source, and the bytes of every parameter and
buffer. A change the key cannot see (a library's forward code under the same structure and weights) is caught by
the parity check every compiled trunk must pass before it is used (`metrics.features`).
"""
from __future__ import annotations

import hashlib
import inspect
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..io.atomic import atomic_path
from .onnx import compile_openvino

CACHE_ENV = "EDGESTYLEGAN_CACHE_DIR"


def cache_dir() -> Path:
    """$EDGESTYLEGAN_CACHE_DIR, else $XDG_CACHE_HOME/edgestylegan, else ~/.cache/edgestylegan."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgestylegan"


def export_key(module: nn.Module, example: tuple, opset: int) -> str:
    digest = hashlib.sha256()
    for part in (torch.__version__, str(opset), repr([(tuple(x.shape), str(x.dtype)) for x in example]),
                 repr(module), inspect.getsource(type(module))):
        digest.update(part.encode() + b"\0")
    for name, tensor in module.state_dict().items():
        digest.update(name.encode() + b"\0")
        digest.update(str(tensor.dtype).encode() + tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_onnx(module: nn.Module, example: tuple, opset: int = 17) -> Path:
    """The ONNX export (TorchScript exporter, static shapes of `example`) of `module`, made on the first call with
    this key and read from the cache after."""
    path = cache_dir() / "onnx" / f"{type(module).__name__.strip('_')}-{export_key(module, example, opset)[:24]}.onnx"
    if not path.is_file():
        try:
            with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=opset)
        except OSError as e:
            raise UserError(f"cannot write the ONNX export cache {path.parent} ({e.strerror}); set {CACHE_ENV} to a "
                            f"writable folder") from e
    return path


def openvino_module(module: nn.Module, example: tuple, precision: str = "f32", opset: int = 17):
    """`module` compiled by OpenVINO for the static input shapes of `example`, from its cached ONNX export."""
    path = cached_onnx(module, example, opset)
    try:
        return compile_openvino(path, precision)
    except RuntimeError as e:
        raise UserError(f"OpenVINO cannot read the cached ONNX export {path} ({str(e).splitlines()[0]}); delete it "
                        f"(the next run exports it again)") from e
