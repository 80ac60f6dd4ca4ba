"""Outputs of the distill stage: the exported student, a teacher-vs-student sample grid, loss curves, metrics."""
from __future__ import annotations

from pathlib import Path

import torch

from ..artifacts.distill import DistillRecord
from ..imaging import grid, save_png, to_uint8
from ..io.atomic import atomic_path
from ..io.checkpoint import save_generator
from ..models.mobilestylegan import Generator
from .students import export_student
from .targets import Pool
from .teachers import Teacher
from .trainer import TrainResult, student_images


def plot_curves(history: list[dict], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_keys = sorted({k for r in history for k in r if k.startswith("train/") and k != "train/lr"})
    val = [(r["step"], r["val/psnr_db"]) for r in history if "val/psnr_db" in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in train_keys:
        pts = [(r["step"], r[key]) for r in history if key in r]
        steps, values = zip(*pts)
        window = max(1, len(values) // 50)
        smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                  for i in range(len(values))]
        line, = axes[0].plot(steps, values, alpha=0.25)
        axes[0].plot(steps, smooth, color=line.get_color(), label=key.removeprefix("train/"))
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training losses (faint: per step; solid: moving mean)")
    axes[0].legend(fontsize=8)
    if val:
        axes[1].plot(*zip(*val), marker="o")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("PSNR vs teacher (dB)")
    axes[1].set_title("held-out latents")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def write_outputs(student: Generator, result: TrainResult, teacher: Teacher, pool: Pool, sample_count: int,
                  truncation: float, model_path: str | Path, reports_dir: str | Path,
                  metrics_path: str | Path) -> DistillRecord:
    """Export and write the student, samples.png (teacher row over student row, held-out latents), curves.png and
    the DistillRecord; `truncation` is distill.truncation."""
    reports_dir = Path(reports_dir)
    exported = export_student(student)
    k = min(sample_count, len(pool.val_z))
    fake = student_images(exported, pool.val_z[:k], truncation, "cpu")
    save_png(grid(to_uint8(torch.cat((pool.val_images[:k].float(), fake))), columns=k), reports_dir / "samples.png")
    plot_curves(result.history, reports_dir / "curves.png")
    losses = [r["train/total"] for r in result.history if "train/total" in r]
    init_val = next((r for r in result.history if r.get("step") == 0 and "val/psnr_db" in r), None)
    record = DistillRecord(
        val={**result.val, "num_latents": len(pool.val_z), "truncation": truncation},
        train={"steps": result.steps, "seconds": round(result.seconds, 1), "resumed_from": result.resumed_from,
               "loss_total_first": losses[0], "loss_total_last": losses[-1], "pool_size": len(pool.train_z)},
        student={"resolution": exported.resolution,
                 "params_synthesis": sum(p.numel() for p in exported.synthesis.parameters())},
        val_at_init={"psnr_db": init_val["val/psnr_db"]} if init_val else None,
        renderer_parity=pool.meta["parity"],
    )
    info = {"kind": "distilled student", "teacher": teacher.source, "teacher_sha256": teacher.sha256,
            "teacher_kind": teacher.kind, "steps": result.steps, "val_psnr_db": result.val.get("psnr_db"),
            "pool": pool.meta.get("fingerprint"), "truncation": truncation}
    save_generator(exported, model_path, info)
    record.write(metrics_path)
    return record
