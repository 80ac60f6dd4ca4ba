"""Quality vs sparsity for every pruning recovery method, on one figure: the comparison the DAG does not hold (it
prunes with the configured prune.recovery only; all methods at every amount would exceed the `dvc repro` budget).

For each recovery in `recoveries` and each amount in prune.amounts: stage prune's and stage evaluate's own functions
run in a scratch project whose models/teacher.safetensors, data/eval/reference.npz and the prune_profile outputs are
links to this project's, with params.yaml's prune.recovery replaced. Writes reports/benchmarks/prune_recovery.{csv,md,
png}. A benchmark (scripts/prune_recovery_curves.py), not a stage.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

from ..config import read_yaml, validate
from ..errors import UserError
from ..io.atomic import write_text
from ..io.tables import csv_text
from ..paths import Paths, pruned_variant
from ..report.figures import recovery_curves
from .evaluate import run_evaluate
from .prune import run_prune
from .scratch import link_inputs

RECOVERIES = ("none", "reconstruct", "distill")
COLUMNS = ["recovery", "amount", "sparsity_synthesis", "fd_enl0", "kid", "psnr_db", "ssim", "prune_seconds"]


def _markdown(rows: list[dict], floor: dict, n: int, resolution: int) -> str:
    lines = ["# Pruning recovery methods", "",
             f"fd_enl0 / KID (EfficientNet-Lite0 features) vs the teacher's samples, N = {n}, {resolution} px; PSNR / "
             f"SSIM against the teacher's image of the same latent. Noise floor: fd_enl0 {floor['fd_enl0']:.1f}, "
             f"KID {floor['kid']:.4f}.", "",
             "| recovery | amount | synthesis sparsity | fd_enl0 | x floor | KID | PSNR dB | SSIM | prune s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recovery']} | {r['amount']:g} | {100 * r['sparsity_synthesis']:.1f} % | "
                     f"{r['fd_enl0']:.1f} | {r['fd_enl0'] / floor['fd_enl0']:.2f} | {r['kid']:.4f} | "
                     f"{r['psnr_db']:.2f} | {r['ssim']:.3f} | {r['prune_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run_prune_recovery_curves(recoveries: list[str], params_path: str | Path = "params.yaml",
                              root: str | Path = ".") -> list[dict]:
    unknown = sorted(set(recoveries) - set(RECOVERIES))
    if unknown or not recoveries:
        raise UserError(f"recoveries {recoveries}: choose from {RECOVERIES}")
    paths = Paths(Path(root))
    raw = read_yaml(params_path)
    validate(raw, ["prune", "eval"], str(params_path))
    rows, floor, protocol = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Paths(Path(tmp))
        base = raw["prune"]["base"]
        link_inputs(paths, scratch, [paths.base_model(base), paths.teacher_model, paths.eval_reference,
                                     paths.prune_profile, paths.prune_hessians, paths.prune_importance],
                    "`dvc repro eval_reference prune_profile` (and the prune.base's stage)")
        for recovery in recoveries:
            params = scratch.root / f"params_{recovery}.yaml"
            params.write_text(yaml.safe_dump({**raw, "prune": {**raw["prune"], "recovery": recovery}}))
            for amount in raw["prune"]["amounts"]:
                print(f"recovery {recovery}, amount {amount}", flush=True)
                start = time.perf_counter()
                pruned = run_prune(amount, params, scratch.root)
                seconds = time.perf_counter() - start
                record, _ = run_evaluate(pruned_variant(amount), params, scratch.root)
                rows.append({"recovery": recovery, "amount": amount,
                             "sparsity_synthesis": pruned.sparsity["synthesis"], "fd_enl0": record.scores["fd_enl0"],
                             "kid": record.scores["kid_enl0"]["mean"], "psnr_db": record.paired["psnr_db"],
                             "ssim": record.paired["ssim"], "prune_seconds": seconds})
                floor = {"fd_enl0": record.noise_floor["fd_enl0"], "kid": record.noise_floor["kid_enl0"]["mean"]}
                protocol = {"fd_key": "fd_enl0", "space_short": "EfficientNet-Lite0", "n": record.n,
                            "resolution": record.resolution}
    out = paths.reports / "benchmarks"
    write_text(out / "prune_recovery.csv", csv_text(rows, COLUMNS))
    write_text(out / "prune_recovery.md", _markdown(rows, floor, protocol["n"], protocol["resolution"]))
    recovery_curves(rows, floor, protocol, out / "prune_recovery.png")
    return rows
