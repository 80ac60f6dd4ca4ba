"""sha256-pinned downloads with resume and a progress bar (http(s) and file:// URLs).

A partial download is kept as `<dest>.part` and resumed with an HTTP Range request. The file only appears at
`dest` after its sha256 matched. Offline or mismatching downloads raise `DownloadError` whose message names the
URL, the expected hash and how to place the file by hand.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError

CHUNK = 1 << 20


class DownloadError(UserError):
    pass


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _manual_hint(url: str, sha256: str, dest: Path) -> str:
    return (f"download {url} by hand on a machine with access, check `sha256sum` prints {sha256}, "
            f"and place it at {dest} (or use a local path / file:// URL)")


def fetch(url: str, sha256: str, dest: str | Path, timeout: float = 30.0) -> Path:
    """Make `dest` hold the file at `url` whose sha256 is `sha256`; reuse `dest` if it already matches."""
    dest = Path(dest)
    sha256 = sha256.lower()
    if dest.is_file():
        if sha256_of(dest) == sha256:
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", None)
            if offset and status != 206:  # Server (or file://) ignored the range: start over.
                offset = 0
            total = response.headers.get("Content-Length")
            total = int(total) + offset if total is not None else None
            with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, disable=None
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadError(f"cannot download {url} ({e}); partial data kept in {part} for resume. "
                            f"Otherwise {_manual_hint(url, sha256, dest)}") from e
    actual = sha256_of(part)
    if actual != sha256:
        part.unlink()
        raise DownloadError(f"sha256 mismatch for {url}: expected {sha256}, got {actual}; the file was discarded. "
                            f"Check the URL and teacher.sha256, or {_manual_hint(url, sha256, dest)}")
    os.replace(part, dest)
    return dest
