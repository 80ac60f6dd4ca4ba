"""DVC stages eval_reference and evaluate@<variant> / evaluate_pruned@<amount>: the teacher reference sets, then
one variant's metrics (the model file follows from the variant id and params).

    python stages/evaluate.py reference
    python stages/evaluate.py variant --variant pruned-0.2
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.evaluate import run_eval_reference, run_evaluate


@entry_point
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project root the artifact paths are relative to")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reference", help="generate and featurise the teacher's evaluation and reference sets")
    var = sub.add_parser("variant", help="evaluate one variant against the reference")
    var.add_argument("--variant", required=True, help="teacher, pruned-<amount>, int8, student or student-int8")
    args = parser.parse_args(argv)

    if args.command == "reference":
        meta = run_eval_reference(args.params, args.root)
        for part, g in meta.generation.items():
            print(f"teacher {part} set: {meta.config['num_samples']} images at {g['resolution']}^2 on "
                  f"{meta.generation_parity['runtime']}, {g['images_per_s']:.2f} images/s")
        print(f"features: {meta.feature_images_per_s:.1f} images/s")
        return

    record, info = run_evaluate(args.variant, args.params, args.root)
    psnr = record.paired["psnr_db"]
    summary = ", ".join(f"{k} {v:.4g}" for k, v in record.scores.items() if isinstance(v, float))
    print(f"{args.variant}: {summary}; PSNR {'inf' if psnr is None else f'{psnr:.2f}'} dB, "
          f"SSIM {record.paired['ssim']:.4f}")
    fallbacks = [r["fallback_reason"] for r in (info.generation_parity, *info.feature_parity.values())
                 if r["fallback_reason"]]
    print(f"{args.variant}: {info.model} on {info.generation_parity['runtime']}, "
          f"{info.generation['images_per_s']:.2f} images/s generated; seconds: "
          + ", ".join(f"{k} {v:.1f}" for k, v in info.seconds.items())
          + "".join(f"\nfallback: {reason}" for reason in fallbacks))


if __name__ == "__main__":
    main()
