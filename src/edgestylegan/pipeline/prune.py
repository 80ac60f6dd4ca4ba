"""Stage prune@<amount>: one-shot unstructured pruning of prune.base, stored sparse (bitmask + values).

Writes, only after everything succeeded: models/pruned/<amount>.safetensors (format edgestylegan.sparse_generator.v1,
checked to round-trip bit for bit), reports/prune/<amount>_layers.csv and metrics/prune/<amount>.json
(`artifacts.prune.PruneRecord`).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..artifacts.prune import SCOPES, PruneRecord
from ..compress.prune import earlier_study_sparsity, layers_csv, prune_generator, sparsity_report
from ..compress.sparse import load_sparse_generator, save_sparse_generator
from ..config import load_params
from ..errors import UserError
from ..io.atomic import atomic_path, write_text
from ..io.checkpoint import load_generator
from ..metrics.accounting import state_dicts_equal
from ..paths import Paths


def run_prune(amount: float, params_path: str | Path = "params.yaml", root: str | Path = ".") -> PruneRecord:
    paths = Paths(Path(root))
    p = load_params(params_path, ["prune"])["prune"]
    if amount not in p["amounts"]:
        raise UserError(f"--amount {amount} is not one of prune.amounts {p['amounts']}")
    base_path = paths.base_model(p["base"])
    if not base_path.is_file():
        raise UserError(f"prune.base = {p['base']} needs {base_path}; run `dvc repro "
                        f"{'fetch_teacher' if p['base'] == 'teacher' else 'distill'}` first")

    gen = load_generator(base_path)
    study = earlier_study_sparsity(gen, amount)
    names = prune_generator(gen, amount, p["method"], p["scope"], p["targets"], p["seed"])
    report = sparsity_report(gen, names)
    info = {"base": os.path.relpath(base_path, paths.root), "amount": amount, "method": p["method"],
            "scope": p["scope"], "targets": p["targets"], "seed": p["seed"]}
    out_path = paths.pruned_model(amount)
    with atomic_path(out_path, suffix=".safetensors") as tmp:
        save_sparse_generator(gen, tmp, info)
        if not state_dicts_equal(load_sparse_generator(tmp).state_dict(), gen.state_dict()):
            raise RuntimeError(f"{out_path} does not round-trip exactly")   # a bug, not a user error
    record = PruneRecord(amount=amount, sparsity={scope: report[scope]["sparsity"] for scope in SCOPES},
                         earlier_study_recipe=study)
    write_text(paths.prune_layers(amount), layers_csv(report["layers"]))
    record.write(paths.prune_metrics(amount))
    return record
