"""DVC stage distill: train a MobileStyleGAN student from the teacher (issue 5), export it, log curves and samples.

    dvc repro distill                                            # CPU / one GPU
    torchrun --standalone --nproc_per_node 4 stages/distill.py   # several GPUs (rank 0 writes everything)

An interrupted run resumes from data/cache/distill/resume.pt (outside DVC's outs) when params, teacher and pool are
unchanged; the file is removed once the student is written.
"""
import argparse
from pathlib import Path

from edgestylegan.cli import entry_point
from edgestylegan.distill.report import write_outputs
from edgestylegan.distill.run import (CACHE_DIR, POOL_PATH, TEACHER_PATH, check_pool, pool_spec, run_fingerprint,
                                      student_config, teacher_from_params, train_config)
from edgestylegan.distill.students import build_student
from edgestylegan.distill.targets import OnlineBatches, PoolBatches, load_pool
from edgestylegan.distill.trainer import init_distributed, train
from edgestylegan.config import load_params


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--teacher", default=str(TEACHER_PATH))
    parser.add_argument("--pool", default=str(POOL_PATH))
    parser.add_argument("--resume", default=str(CACHE_DIR / "resume.pt"))
    parser.add_argument("--live", default="dvclive/distill")
    parser.add_argument("--out", default="models/student.safetensors")
    parser.add_argument("--reports", default="reports/distill")
    parser.add_argument("--metrics", default="metrics/distill.json")
    args = parser.parse_args()
    p = load_params(args.params, ["student", "distill"])
    student_p, d = p["student"], p["distill"]

    teacher = teacher_from_params(d, args.teacher)
    pool = load_pool(args.pool)
    check_pool(pool, pool_spec(student_p, d, teacher), args.pool)
    ctx = init_distributed(d["device"])
    student, pretrained = build_student(student_config(student_p, teacher), teacher.model, student_p["init"], d["seed"])
    if d["targets"] == "pool":
        batches = PoolBatches(pool, d["seed"])
    else:
        batches = OnlineBatches(teacher, student_p["resolution"], d["truncation"], d["seed"], str(ctx.device))
    k = min(d["sample_count"], len(pool.val_z))
    result = train(student, pretrained, batches, (pool.val_z, pool.val_images), train_config(d), args.resume,
                   run_fingerprint(student_p, d, teacher, pool.meta["fingerprint"]), args.live, ctx,
                   sample_z=pool.val_z[:k], sample_images=pool.val_images[:k])
    if ctx.is_main:
        write_outputs(student, result, teacher, pool, d, args.out, args.reports, args.metrics)
        Path(args.resume).unlink(missing_ok=True)  # Done: a forced rerun must train again, not "resume" at the end.


if __name__ == "__main__":
    main()
