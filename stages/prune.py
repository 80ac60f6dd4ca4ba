"""DVC stage prune@<amount>: pruning of the base model with recovery, stored sparse (bitmask + int8 or float values).

    python stages/prune.py --amount 0.6

The amount is a budget over the targeted weights, split by prune.allocation (the sensitivity profile of stage
prune_profile by default), then the survivors are re-fit layer by layer (prune.recovery = reconstruct: OBS /
SparseGPT on calibration inputs; distill adds block-wise distillation against the dense model).
Outputs: models/pruned/<amount>.safetensors (format edgestylegan.sparse_generator.v2), metrics/prune/<amount>.json
(sparsity per scope and per layer kind, recovery error and times, the earlier study's recipe on this model and on
the upstream parameter set; `edgestylegan.artifacts.prune`), reports/prune/<amount>_layers.csv (per-tensor table).
The pruned file's bytes and parameter counts are measured by stage account.
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.prune import run_prune


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--amount", type=float, required=True, help="one entry of prune.amounts")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project folder holding models/, metrics/, reports/")
    args = parser.parse_args()
    record = run_prune(args.amount, args.params, args.root)
    groups = ", ".join(f"{g} {s:.0%}" for g, s in record.group_sparsity.items())
    print(f"prune {args.amount} ({record.allocation}, {record.recovery}, {record.values} values): sparsity targeted "
          f"{record.sparsity['targeted']:.2%}, synthesis {record.sparsity['synthesis']:.2%} ({groups}); "
          f"reconstruct {record.seconds['reconstruct']:.0f} s, distill {record.seconds['distill']:.0f} s")


if __name__ == "__main__":
    main()
