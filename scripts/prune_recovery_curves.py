"""Quality vs sparsity per pruning recovery method (none / reconstruct / distill) at every prune.amounts entry, on
one figure with the noise floor: reports/benchmarks/prune_recovery.{png,md,csv}.

    python scripts/prune_recovery_curves.py                          # all three methods
    python scripts/prune_recovery_curves.py --recoveries none reconstruct

Needs data/eval/reference.npz and stage prune_profile's outputs (`dvc repro eval_reference prune_profile`); prunes
prune.base's model in a scratch folder (nothing in models/ or metrics/ changes). About 1.5 min per point for
none / reconstruct and ~9 min for distill (420-449 s of recovery per amount on a 2-core AVX-512 EPYC).
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.prune_recovery_curves import RECOVERIES, run_prune_recovery_curves


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recoveries", nargs="+", default=list(RECOVERIES), choices=RECOVERIES)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    for row in run_prune_recovery_curves(args.recoveries, args.params, args.root):
        print(f"{row['recovery']} @ {row['amount']:g}: fd_enl0 {row['fd_enl0']:.1f}, PSNR {row['psnr_db']:.2f} dB")


if __name__ == "__main__":
    main()
