"""Stage distill_pool: the teacher's target images (training pool + held-out split) for stage distill
(`pipeline.distill`), rendered once at the student resolution; resumable by chunk under `Paths.distill_cache`.

Its own module so that the stage's code deps are the pool's (targets, teachers), not the training loop's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import load_params
from ..distill.targets import Pool, PoolSpec, build_pool
from ..distill.teachers import Teacher, load_teacher
from ..paths import Paths

SECTIONS = ["student", "distill"]


def run_distill_pool(params_path: str | Path = "params.yaml", root: str | Path = ".") -> Pool:
    """Render the pool to `Paths.distill_pool`; its meta holds the renderer's parity record (`meta["parity"]`)."""
    p, paths = load_params(params_path, SECTIONS), Paths(Path(root))
    d = p["distill"]
    teacher = teacher_from_params(d, paths)
    use_cuda = d["device"] == "cuda" or (d["device"] == "auto" and torch.cuda.is_available())
    return build_pool(teacher, pool_spec(p["student"], d, teacher), paths.distill_pool, paths.distill_cache / "pool",
                      d["teacher_runtime"], "cuda" if use_cuda else "cpu")


def teacher_from_params(d: dict, paths: Paths) -> Teacher:
    """The teacher the validated `distill` section names."""
    return load_teacher(d["teacher"], paths.teacher_model, paths.downloads, d["stylegan2_file"], d["stylegan2_url"],
                        d["stylegan2_sha256"])


def pool_spec(student: dict, d: dict, teacher: Teacher) -> PoolSpec:
    return PoolSpec(train_size=d["pool_size"] if d["targets"] == "pool" else 0, train_seed=d["pool_seed"],
                    val_size=d["val_size"], val_seed=d["val_seed"], truncation=d["truncation"],
                    resolution=student["resolution"], teacher_sha256=teacher.sha256)
