"""DVC stages eval_reference and evaluate@<variant>: the teacher reference sets, then one variant's metrics.

    python stages/evaluate.py reference --model models/teacher.safetensors --out data/eval/reference.npz
    python stages/evaluate.py variant --variant pruned-0.2 --model models/pruned/0.2.safetensors \
        --reference data/eval/reference.npz --metrics metrics/eval/pruned-0.2.json --samples reports/eval/pruned-0.2.png
"""
import argparse
from pathlib import Path

from edgestylegan.cli import entry_point
from edgestylegan.imaging import grid, save_png
from edgestylegan.io.atomic import write_json
from edgestylegan.metrics.evaluate import EvalConfig, build_reference, evaluate_variant
from edgestylegan.config import load_params


@entry_point
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    ref = sub.add_parser("reference", help="generate and featurise the teacher's evaluation and reference sets")
    ref.add_argument("--model", default="models/teacher.safetensors")
    ref.add_argument("--out", default="data/eval/reference.npz")
    var = sub.add_parser("variant", help="evaluate one model against the reference")
    var.add_argument("--variant", required=True, help="variant id, e.g. teacher, pruned-0.2, int8, student")
    var.add_argument("--model", required=True)
    var.add_argument("--reference", default="data/eval/reference.npz")
    var.add_argument("--metrics", help="default metrics/eval/<variant>.json")
    var.add_argument("--samples", help="sample strip; default reports/eval/<variant>.png")
    var.add_argument("--info", help="protocol and timings for the report; default reports/eval/<variant>.json")
    args = parser.parse_args(argv)
    cfg = EvalConfig.from_params(load_params(args.params, ["eval"])["eval"])

    if args.command == "reference":
        meta = build_reference(args.model, cfg, args.out)
        for part, g in meta["generation"].items():
            print(f"teacher {part} set: {cfg.num_samples} images at {g['resolution']}^2 on {g['runtime']}, "
                  f"{g['images_per_s']:.2f} images/s")
        print(f"features: {meta['feature_images_per_s']:.1f} images/s")
        return

    metrics, info, strip = evaluate_variant(args.model, args.reference, cfg)
    info["variant"] = args.variant
    write_json(args.metrics or f"metrics/eval/{args.variant}.json", metrics)
    write_json(args.info or f"reports/eval/{args.variant}.json", info)
    save_png(grid(strip, columns=len(strip)), args.samples or Path("reports/eval") / f"{args.variant}.png")
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"{args.variant}: {summary}; PSNR {metrics['paired'].get('psnr_db', float('inf')):.2f} dB, "
          f"SSIM {metrics['paired']['ssim']:.4f}")
    g, sec = info["generation"], info["seconds"]
    print(f"{args.variant}: {g['runtime']}, {g['images_per_s']:.2f} images/s generated; seconds: "
          + ", ".join(f"{k} {v:.1f}" for k, v in sec.items()))


if __name__ == "__main__":
    main()
