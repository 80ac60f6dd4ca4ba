"""Stage report: reports/report.md, metrics.csv, plots/*.csv and figures/*.png from the artifacts of the variants
report.variants names (`pruned` = one per prune.amounts entry); it never globs, and a listed variant whose
artifacts are missing is a UserError naming the stage that writes them."""
from __future__ import annotations

from pathlib import Path

from ..config import load_params
from ..paths import Paths
from ..report.build import build_report

SECTIONS = ["eval", "report", "prune", "quantize"]


def run_report(params_path: str | Path = "params.yaml", root: str | Path = ".") -> dict:
    """-> {figure name: (drawn, caption or the reason it was not drawn)}."""
    return build_report(load_params(params_path, SECTIONS), Paths(Path(root)))
