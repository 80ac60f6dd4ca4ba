"""Stage check_params: validate the whole params.yaml (every section and key), whatever stage reads it.

Other stages validate only the sections they read, and DVC reruns only stages whose params changed, so a typo'd
key (`prune.amout`), an unknown section or duplicate sweep entries would otherwise pass silently. This stage
depends on the whole file and every chain of the pipeline depends on its output, so it runs first after any edit.
"""
from __future__ import annotations

from pathlib import Path

from ..config import validate_file
from ..io.atomic import write_text
from ..paths import Paths


def run_check_params(params_path: str | Path = "params.yaml", root: str | Path = ".") -> list[str]:
    """Validate; write the sorted list of validated keys (it changes only when the schema does, so a params edit
    that passes does not invalidate any downstream stage). Returns those keys."""
    checked = validate_file(params_path)
    keys = sorted(f"{section}.{key}" for section, values in checked.items() for key in values)
    write_text(Paths(Path(root)).params_check, "\n".join(keys) + "\n")
    return keys
