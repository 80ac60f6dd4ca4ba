"""DVC stage distill_pool: render the teacher's target images once (training pool + held-out validation split).

Resumable: finished chunks are kept under data/cache/distill/pool/ until the pool file is written.
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.distill_pool import run_distill_pool


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project root (artifact layout: edgestylegan.paths)")
    args = parser.parse_args()
    pool = run_distill_pool(args.params, args.root)
    parity = pool.meta["parity"]
    print(f"pool: {len(pool.train_z)} training + {len(pool.val_z)} held-out teacher images at "
          f"{pool.meta['spec']['resolution']} px ({parity['runtime']}"
          + (f"; {parity['fallback_reason']}" if parity["fallback_reason"] else "") + ")")


if __name__ == "__main__":
    main()
