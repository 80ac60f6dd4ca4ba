"""Turn validated params (`student`, `distill` sections) into the objects the distill stages use."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import UserError
from ..models.mobilestylegan import GeneratorConfig
from .targets import Pool, PoolSpec
from .teachers import Teacher, load_teacher
from .trainer import TrainConfig

TEACHER_PATH = Path("models/teacher.safetensors")
POOL_PATH = Path("data/distill/pool.safetensors")
CACHE_DIR = Path("data/cache/distill")        # Resume state: outside every DVC out, so `dvc repro` keeps it.


def teacher_from_params(d: dict, teacher_path: str | Path = TEACHER_PATH) -> Teacher:
    return load_teacher(d["teacher"], teacher_path, d["stylegan2_file"], d["stylegan2_url"], d["stylegan2_sha256"])


def pool_spec(student: dict, d: dict, teacher: Teacher) -> PoolSpec:
    return PoolSpec(train_size=d["pool_size"] if d["targets"] == "pool" else 0, train_seed=d["pool_seed"],
                    val_size=d["val_size"], val_seed=d["val_seed"], truncation=d["truncation"],
                    resolution=student["resolution"], teacher_sha256=teacher.sha256)


def check_pool(pool: Pool, spec: PoolSpec, path: str | Path) -> None:
    if pool.meta.get("fingerprint") != spec.fingerprint():
        raise UserError(f"{path} was rendered for {pool.meta.get('spec')}, but params and teacher ask for "
                        f"{spec.__dict__}; run `dvc repro distill_pool`")


def student_config(student: dict, teacher: Teacher) -> GeneratorConfig:
    t = teacher.model.config
    return GeneratorConfig(style_dim=t.style_dim, mapping_layers=t.mapping_layers, resolution=student["resolution"],
                           channels=tuple(student["channels"]), all_heads=student["all_heads"])


def train_config(d: dict) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in d.items() if k in fields})


def run_fingerprint(student: dict, d: dict, teacher: Teacher, pool_fingerprint: str) -> str:
    """Identity of a training run: a resume checkpoint is only reused when this matches."""
    ignore = {"log_every", "sample_every", "sample_count", "checkpoint_every", "device"}
    blob = {"student": student, "distill": {k: v for k, v in d.items() if k not in ignore},
            "teacher": teacher.sha256, "pool": pool_fingerprint}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]
