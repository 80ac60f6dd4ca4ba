"""DVC stage prune@<amount>: one-shot unstructured pruning of the base model, stored sparse (bitmask + values).

    python stages/prune.py --amount 0.6

Outputs: models/pruned/<amount>.safetensors (format edgestylegan.sparse_generator.v1), metrics/prune/<amount>.json
(sparsity over the targeted tensors / the synthesis net / the whole generator, and the earlier study's recipe on
this model and on the upstream parameter set; `edgestylegan.artifacts.prune`), reports/prune/<amount>_layers.csv
(per-tensor table). The pruned file's bytes and parameter counts are measured by stage account.
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
    study = record.earlier_study_recipe["upstream_parameter_set"]["sparsity_synthesis"]
    print(f"prune {args.amount}: sparsity targeted {record.sparsity['targeted']:.2%}, synthesis "
          f"{record.sparsity['synthesis']:.2%}, generator {record.sparsity['generator']:.2%}; earlier study's "
          f"recipe on the upstream parameter set: {study:.2%}")


if __name__ == "__main__":
    main()
