"""Atomic writes: write to a temp file in the destination folder, then rename over the target."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temp path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | Path):
    """Yield an empty temp folder beside `path`; when the block succeeds it replaces `path` (mode 755, the old
    folder removed), when it raises it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """safetensors serialisation that is a pure function of its inputs.

    The library writes the metadata map in hash order, which changes from process to process, so the same tensors
    and metadata gave files with different bytes (and DVC re-ran every downstream stage). The header is rewritten
    with the metadata keys sorted; tensor entries and data are the library's, unchanged.
    """
    from safetensors.torch import save

    raw = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)   # The format pads the header to 8-byte alignment with spaces.
    return struct.pack("<Q", len(text)) + text + raw[8 + length:]


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Atomic, byte-deterministic safetensors file (see `safetensors_bytes`)."""
    data = safetensors_bytes(tensors, metadata)
    with atomic_path(path, suffix=".safetensors") as tmp:
        Path(tmp).write_bytes(data)
