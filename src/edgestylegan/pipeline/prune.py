"""Stage prune@<amount>: allocation, masks and recovery of one sweep point, stored sparse.

prune@<amount> writes, only after everything succeeded: models/pruned/<amount>.safetensors (format
edgestylegan.sparse_generator.v2, checked to decode to exactly the model that was measured),
reports/prune/<amount>_layers.csv and metrics/prune/<amount>.json (`artifacts.prune.PruneRecord`).
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path

from ..artifacts.prune import SCOPES, PruneRecord, SensitivityProfile
from ..compress.allocation import allocate
from ..compress.prune import (earlier_study_sparsity, group_sparsity, int8_levels_histogram, layers_csv,
                              mask_prune_, select_targets, sparsity_report)
from ..compress.reconstruct import reconstruct_generator, reconstruct_with_hessians, weight_levels_for_error
from ..compress.sparse import int8_weight_roundtrip, load_sparse_generator, save_sparse_generator
from ..config import load_params
from ..distill.recover import recover_by_distillation
from ..errors import UserError
from ..io.atomic import atomic_path, write_text
from ..metrics.accounting import state_dicts_equal
from ..paths import Paths
from .prune_profile import base_model, calibration_styles, read_hessians, read_importance


def run_prune(amount: float, params_path: str | Path = "params.yaml", root: str | Path = ".") -> PruneRecord:
    paths = Paths(Path(root))
    p = load_params(params_path, ["prune"])["prune"]
    if amount not in p["amounts"]:
        raise UserError(f"--amount {amount} is not one of prune.amounts {p['amounts']}")
    gen = base_model(paths, p)
    dense = copy.deepcopy(gen) if p["recovery"] == "distill" else None   # the distillation target
    study = earlier_study_sparsity(gen, amount)
    selected = select_targets(gen, p["targets"])
    sizes_int8 = p["values"] == "int8" and p["int8_error_ratio"] > 0
    hessians = _hessians(paths, p, sizes_int8)
    weighs_rows = p["importance_samples"] > 0 and (p["recovery"] != "none" or sizes_int8)
    importance = read_importance(paths) if weighs_rows else None
    dense_weights = {n: getattr(m, a).detach().clone() for n, (m, a) in selected.items()} if sizes_int8 else None
    seconds = dict.fromkeys(("allocation", "reconstruct", "distill"), 0.0)

    start = time.perf_counter()
    profile = None
    if p["allocation"] == "sensitivity":
        profile = {n: row["error"] for n, row in SensitivityProfile.read(paths.prune_profile).layers.items()}
    zeros = allocate(p["allocation"], {n: getattr(m, a) for n, (m, a) in selected.items()}, amount, profile)
    seconds["allocation"] = time.perf_counter() - start

    errors, distill_stats = None, None
    if p["recovery"] == "none":
        mask_prune_(selected, zeros, p["method"], p["seed"])
    else:
        fixed = None
        if p["method"] == "random":
            masked = copy.deepcopy(gen)
            masked_sel = select_targets(masked, p["targets"])
            mask_prune_(masked_sel, zeros, "random", p["seed"])
            fixed = {n: getattr(m, a) != 0 for n, (m, a) in masked_sel.items()}
        start = time.perf_counter()
        if p["sequential"]:
            styles = calibration_styles(gen, p)
            errors = reconstruct_generator(gen, zeros, styles, styles[:p["calibration_images"]], p["dampening"],
                                           p["calibration_positions"], p["calibration_seed"], fixed_masks=fixed,
                                           importance=importance)
        else:
            errors = reconstruct_with_hessians(gen, zeros, hessians, p["dampening"], fixed_masks=fixed,
                                               importance=importance)
        seconds["reconstruct"] = time.perf_counter() - start
    if p["recovery"] == "distill":
        start = time.perf_counter()
        seeds = range(p["calibration_seed"], p["calibration_seed"] + p["calibration_styles"])
        distill_stats = recover_by_distillation(gen, dense, calibration_seeds=seeds, steps=p["distill_steps"],
                                                lr=p["distill_lr"], batch_size=p["distill_batch_size"],
                                                feature_samples=p["distill_samples"], inputs=p["distill_inputs"],
                                                fit=p["distill_fit"],
                                                seed=p["calibration_seed"], damp=p["dampening"],
                                                resume_path=paths.prune_cache(amount) / "resume.pt",
                                                live_dir=paths.prune_live(amount))
        seconds["distill"] = time.perf_counter() - start

    levels = None
    if sizes_int8:
        levels = weight_levels_for_error({n: getattr(m, a).detach() for n, (m, a) in selected.items()},
                                         dense_weights, hessians, p["int8_error_ratio"], importance)
    if p["values"] == "int8":
        gen = int8_weight_roundtrip(gen, levels)
    report = sparsity_report(gen, list(selected))
    info = {"base": os.path.relpath(paths.base_model(p["base"]), paths.root), "amount": amount,
            **{k: p[k] for k in ("method", "allocation", "recovery", "targets", "values", "int8_error_ratio", "seed")}}
    out_path = paths.pruned_model(amount)
    with atomic_path(out_path, suffix=".safetensors") as tmp:
        save_sparse_generator(gen, tmp, info, values=p["values"], weight_levels=levels)
        if not state_dicts_equal(load_sparse_generator(tmp).state_dict(), gen.state_dict()):
            raise RuntimeError(f"{out_path} does not decode to the pruned model")   # a bug, not a user error
    record = PruneRecord(amount=amount, sparsity={scope: report[scope]["sparsity"] for scope in SCOPES},
                         allocation=p["allocation"], recovery=p["recovery"], values=p["values"],
                         group_sparsity=group_sparsity(report["layers"]),
                         mean_layer_error=sum(errors.values()) / len(errors) if errors else None,
                         int8_levels=int8_levels_histogram(report["layers"], levels) if p["values"] == "int8" else None,
                         seconds=seconds, distill=distill_stats, earlier_study_recipe=study)
    write_text(paths.prune_layers(amount), layers_csv(report["layers"], errors, levels))
    record.write(paths.prune_metrics(amount))
    return record


def _hessians(paths: Paths, p: dict, sizes_int8: bool) -> dict | None:
    """Stage prune_profile's layer Hessians, read once, where the one-shot reconstruction or the int8 level choice
    (prune.int8_error_ratio) needs them; else None."""
    one_shot = p["recovery"] != "none" and not p["sequential"]
    if not (one_shot or sizes_int8):
        return None
    try:
        return read_hessians(paths)
    except UserError as e:
        if one_shot:
            raise
        raise UserError(f"{e}; prune.int8_error_ratio > 0 sizes the int8 codes from them (0 stores 8-bit codes "
                        f"without them)") from e
