"""Scratch projects for the benchmarks: a temporary root whose inputs are links to this project's artifacts."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..paths import Paths


def link_inputs(paths: Paths, scratch: Paths, needed: list[Path], make: str) -> None:
    """Link each of `needed` (paths under `paths.root`) to the same place under `scratch.root`; stop, naming the missing
    files and `make` (what builds them), before linking anything if one is absent."""
    needed = list(dict.fromkeys(needed))
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise UserError(f"missing {missing}; run {make} first")
    for src in needed:
        dst = scratch.root / src.relative_to(paths.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src.resolve())
