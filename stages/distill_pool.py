"""DVC stage distill_pool: render the teacher's target images once (training pool + held-out validation split).

Resumable: finished chunks are kept under data/cache/distill/pool/ until the pool file is written.
"""
import argparse

import torch

from edgestylegan.cli import entry_point
from edgestylegan.distill.run import CACHE_DIR, POOL_PATH, TEACHER_PATH, pool_spec, teacher_from_params
from edgestylegan.distill.targets import build_pool
from edgestylegan.config import load_params


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--teacher", default=str(TEACHER_PATH))
    parser.add_argument("--out", default=str(POOL_PATH))
    args = parser.parse_args()
    p = load_params(args.params, ["student", "distill"])
    student, d = p["student"], p["distill"]

    teacher = teacher_from_params(d, args.teacher)
    spec = pool_spec(student, d, teacher)
    device = "cuda" if d["device"] == "cuda" or (d["device"] == "auto" and torch.cuda.is_available()) else "cpu"
    pool = build_pool(teacher, spec, args.out, CACHE_DIR / "pool", d["teacher_runtime"], device)
    print(f"pool: {len(pool.train_z)} training + {len(pool.val_z)} held-out teacher images at "
          f"{spec.resolution} px ({pool.meta['runtime']}) -> {args.out}")


if __name__ == "__main__":
    main()
