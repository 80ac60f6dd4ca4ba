"""Stage prune_profile: the per-layer sensitivity profile that prune.allocation = sensitivity splits the budget by,
the layers' input Hessians and output importance that every prune stage's reconstruction uses; and the base model and
calibration set that every prune stage shares."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..artifacts.prune import SensitivityProfile
from ..compress.allocation import LEVELS
from ..compress.importance import output_importance
from ..compress.prune import layer_group, select_targets
from ..compress.reconstruct import layer_hessians, sensitivity_profile
from ..config import load_params
from ..errors import UserError
from ..io.atomic import write_safetensors
from ..io.checkpoint import load_generator
from ..models.mobilestylegan import Generator, latents_from_seeds
from ..paths import Paths
from ..report.figures import sensitivity_curves


def base_model(paths: Paths, p: dict) -> Generator:
    base_path = paths.base_model(p["base"])
    if not base_path.is_file():
        raise UserError(f"prune.base = {p['base']} needs {base_path}; run `dvc repro "
                        f"{'fetch_teacher' if p['base'] == 'teacher' else 'distill'}` first")
    return load_generator(base_path).eval()


@torch.no_grad()
def calibration_styles(gen: Generator, p: dict) -> torch.Tensor:
    seeds = range(p["calibration_seed"], p["calibration_seed"] + p["calibration_styles"])
    return gen.style(latents_from_seeds(seeds, gen.style_dim))


def run_prune_profile(params_path: str | Path = "params.yaml", root: str | Path = ".") -> SensitivityProfile:
    paths = Paths(Path(root))
    p = load_params(params_path, ["prune"])["prune"]
    gen = base_model(paths, p)
    selected = select_targets(gen, p["targets"])
    styles = calibration_styles(gen, p)
    resolution = min(p["importance_resolution"], gen.resolution)   # both powers of two: it divides
    importance = _importance(gen, {n: m for n, (m, _) in selected.items()}, styles, resolution, p)
    hessians = layer_hessians(gen, list(selected), styles, styles[:p["calibration_images"]],
                              p["calibration_positions"], p["calibration_seed"])
    state = gen.state_dict()
    errors = sensitivity_profile({n: state[n] for n in selected}, hessians, LEVELS, p["dampening"])
    profile = SensitivityProfile(base=os.path.relpath(paths.base_model(p["base"]), paths.root), levels=list(LEVELS),
                                 layers={n: {"params": state[n].numel(), "group": layer_group(n), "error": errors[n]}
                                         for n in selected})
    write_safetensors(paths.prune_hessians, {n: h.to(torch.float32).contiguous() for n, h in hessians.items()},
                      {"base": profile.base, "targets": p["targets"]})
    write_safetensors(paths.prune_importance, importance,
                      {"base": profile.base, "samples": str(p["importance_samples"]), "resolution": str(resolution)})
    sensitivity_curves(profile.levels, profile.layers, paths.prune_profile_figure)
    profile.write(paths.prune_profile)
    return profile


def _importance(gen: Generator, owners: dict, styles: torch.Tensor, resolution: int, p: dict) -> dict:
    """Output importance of every targeted layer on the first prune.importance_samples calibration styles ({} if 0)."""
    if p["importance_samples"] == 0:
        return {}
    return output_importance(gen, owners, styles[:p["importance_samples"]], resolution, p["calibration_seed"])


def read_hessians(paths: Paths) -> dict[str, torch.Tensor]:
    return _read(paths.prune_hessians)


def read_importance(paths: Paths) -> dict[str, torch.Tensor]:
    """Stage prune_profile's output importance per targeted layer ({} when prune.importance_samples was 0)."""
    return _read(paths.prune_importance)


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro prune_profile`")
    return load_file(str(path))
