"""Stage distill: the validated `student` / `distill` params turned into a student trained on the target pool of
stage distill_pool (`pipeline.distill_pool`), every file placed by `Paths`.

    python stages/distill.py                                     # CPU / one GPU
    torchrun --standalone --nproc_per_node 4 stages/distill.py   # several GPUs (rank 0 writes everything)

An interrupted distill run resumes from `Paths.distill_cache`/resume.pt (outside DVC's outs) when params, teacher
and pool are unchanged; the file is removed once the student is written.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..artifacts.distill import DistillRecord
from ..config import load_params
from ..distill.report import write_outputs
from ..distill.students import build_student, fit_narrowed_stages, fitted_stages, scaled_channels, stage_parameter_names
from ..distill.targets import OnlineBatches, PoolBatches, latents, load_pool
from ..distill.teachers import Teacher
from ..distill.trainer import TrainConfig, init_distributed, train
from ..errors import UserError
from ..models.mobilestylegan import GeneratorConfig
from ..paths import Paths
from .distill_pool import SECTIONS, pool_spec, teacher_from_params

NOT_IN_RUN_IDENTITY = {"log_every", "sample_every", "sample_count", "checkpoint_every", "device"}
"""distill keys that change only logging or placement, not the trained weights: a resume ignores them."""


def run_distill(params_path: str | Path = "params.yaml", root: str | Path = ".") -> DistillRecord | None:
    """Train the student (every torchrun rank), then on rank 0 write the student, samples, curves and metrics.
    Returns the record on rank 0, None on the other ranks."""
    p, paths = load_params(params_path, SECTIONS), Paths(Path(root))
    student_p, d = p["student"], p["distill"]
    resume = paths.distill_cache / "resume.pt"
    teacher = teacher_from_params(d, paths)
    pool = load_pool(paths.distill_pool)
    spec = pool_spec(student_p, d, teacher)
    if pool.meta.get("fingerprint") != spec.fingerprint():
        raise UserError(f"{paths.distill_pool} was rendered for {pool.meta.get('spec')}, but params and teacher ask "
                        f"for {spec.__dict__}; run `dvc repro distill_pool`")
    ctx = init_distributed(d["device"])
    config = _student_config(student_p, teacher)
    student, pretrained = build_student(config, teacher.model, student_p["init"], d["seed"])
    fitted = fitted_stages(config, teacher.model.config) if student_p["init"] == "teacher" else []
    # Narrowed stages before the last block are fitted block-wise on cached teacher activations, then count as
    # teacher-initialised (frozen with distill.lr_pretrained = 0, so only the suffix trains on images).
    pretrained |= stage_parameter_names(student, fitted)

    def fit_trunk() -> dict:
        z = latents(d["block_samples"], d["pool_seed"], config.style_dim)   # The pool's first training latents.
        return fit_narrowed_stages(student, teacher.model, z, d["truncation"], d["block_steps"], d["lr"],
                                   d["batch_size"], d["seed"], ctx.is_main)

    if d["targets"] == "pool":
        batches = PoolBatches(pool, d["seed"])
    else:
        batches = OnlineBatches(teacher, student_p["resolution"], d["truncation"], d["seed"], str(ctx.device))
    k = min(d["sample_count"], len(pool.val_z))
    result = train(student, pretrained, batches, (pool.val_z, pool.val_images), TrainConfig.from_params(d), resume,
                   _run_fingerprint(student_p, d, teacher, pool.meta["fingerprint"]), paths.distill_live, ctx,
                   sample_z=pool.val_z[:k], sample_images=pool.val_images[:k],
                   fit_trunk=fit_trunk if fitted else None)
    if not ctx.is_main:
        return None
    record = write_outputs(student, result, teacher, pool, d["sample_count"], d["truncation"], paths.student_model,
                           paths.distill_reports, paths.distill_metrics)
    resume.unlink(missing_ok=True)  # Done: a forced rerun must train again, not "resume" at the end.
    return record


def _student_config(student: dict, teacher: Teacher) -> GeneratorConfig:
    t = teacher.model.config
    return GeneratorConfig(style_dim=t.style_dim, mapping_layers=t.mapping_layers, resolution=student["resolution"],
                           channels=scaled_channels(student["channels"], student["width"]),
                           all_heads=student["all_heads"], arch=student["arch"])


def _run_fingerprint(student: dict, d: dict, teacher: Teacher, pool_fingerprint: str) -> str:
    """Identity of a training run: a resume checkpoint is only reused when this matches."""
    blob = {"student": student, "distill": {k: v for k, v in d.items() if k not in NOT_IN_RUN_IDENTITY},
            "teacher": teacher.sha256, "pool": pool_fingerprint}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]
