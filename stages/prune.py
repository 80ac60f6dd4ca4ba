"""DVC stage prune@<amount>: one-shot unstructured pruning of the base model, stored sparse (bitmask + values).

Outputs: models/pruned/<amount>.safetensors (format edgestylegan.sparse_generator.v1), metrics/prune/<amount>.json
(sparsity over the targeted tensors / the synthesis net / the whole generator, dense vs sparse bytes measured from
serialised files, and the earlier study's recipe on this model and on the upstream parameter set for comparison),
reports/prune/<amount>_layers.csv (per-tensor table).
"""
import argparse
import csv
import io
from pathlib import Path

from edgestylegan.errors import UserError
from edgestylegan.cli import entry_point
from edgestylegan.compress.prune import earlier_study_sparsity, prune_generator, sparsity_report
from edgestylegan.compress.sparse import load_sparse_generator, save_sparse_generator
from edgestylegan.io.atomic import write_json, write_text
from edgestylegan.io.checkpoint import load_generator
from edgestylegan.metrics.accounting import dense_file_bytes, state_dicts_equal
from edgestylegan.config import load_params


def amount_tag(amount: float) -> str:
    """The file-name form of an amount, identical to DVC's interpolation of the params value (str of the float)."""
    return str(float(amount))


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--amount", type=float, required=True, help="one entry of prune.amounts")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--models", default="models")
    parser.add_argument("--metrics", default="metrics/prune")
    parser.add_argument("--reports", default="reports/prune")
    args = parser.parse_args()
    p = load_params(args.params, ["prune"])["prune"]
    if args.amount not in p["amounts"]:
        raise UserError(f"--amount {args.amount} is not one of prune.amounts {p['amounts']}")
    base_path = Path(args.models) / f"{p['base']}.safetensors"
    if not base_path.is_file():
        raise UserError(f"prune.base = {p['base']} needs {base_path}; run `dvc repro "
                        f"{'fetch_teacher' if p['base'] == 'teacher' else 'distill'}` first")
    tag = amount_tag(args.amount)
    out_path = Path(args.models) / "pruned" / f"{tag}.safetensors"

    gen = load_generator(base_path)
    study = earlier_study_sparsity(gen, args.amount)
    names = prune_generator(gen, args.amount, p["method"], p["scope"], p["targets"], p["seed"])
    report = sparsity_report(gen, names)
    save_sparse_generator(gen, out_path, {"base": str(base_path), "amount": args.amount, "method": p["method"],
                                          "scope": p["scope"], "targets": p["targets"], "seed": p["seed"]})
    if not state_dicts_equal(load_sparse_generator(out_path).state_dict(), gen.state_dict()):
        raise RuntimeError(f"{out_path} does not round-trip exactly")   # a bug, not a user error
    dense, sparse = dense_file_bytes(gen), out_path.stat().st_size

    summary = {k: {kk: vv for kk, vv in v.items()} for k, v in report.items() if k != "layers"}
    metrics = {
        "amount": args.amount,
        "sparsity": {k: v["sparsity"] for k, v in summary.items()},
        "params": summary,
        "bytes": {"dense_fp32": dense, "sparse": sparse, "sparse_over_dense": sparse / dense},
        "earlier_study_recipe": study,
    }
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["tensor", "params", "nonzero", "zeros", "sparsity"])
    for name, row in report["layers"].items():
        writer.writerow([name, row["params"], row["nonzero"], row["zeros"], f"{row['sparsity']:.6f}"])
    write_text(Path(args.reports) / f"{tag}_layers.csv", buf.getvalue())
    write_json(Path(args.metrics) / f"{tag}.json", metrics)
    print(f"prune {tag}: {p['method']}/{p['scope']}/{p['targets']}: sparsity targeted "
          f"{report['targeted']['sparsity']:.2%}, synthesis {report['synthesis']['sparsity']:.2%}; "
          f"{dense / 1e6:.2f} MB dense -> {sparse / 1e6:.2f} MB sparse; earlier study's recipe on the upstream "
          f"parameter set: {study['upstream_parameter_set']['sparsity_synthesis']:.2%}")


if __name__ == "__main__":
    main()
