"""The int8 recipe trade-off table: held-out PSNR vs fp32, fd_enl0 / fid_vs_teacher (stage evaluate's protocol), the
share of conv MACs in int8 kernels and OpenVINO latency (one interleaved run) for each NNCF recipe.

    python scripts/quantize_tradeoff.py                       # the recipes in edgestylegan.pipeline.quantize_tradeoff
    python scripts/quantize_tradeoff.py --recipes my.yaml     # {name: {quantize key: value, ...}, ...}
    python scripts/quantize_tradeoff.py --source student      # the student's export (stage quantize_student)

Needs stage quantize's models/quantized/float.onnx (quantize_student's models/quantized_student/float.onnx) and stage
eval_reference's data/eval/reference.npz (`dvc repro quantize eval_reference`). Writes
reports/benchmarks/quantize_tradeoff{,_student}.{csv,md}. About 1.5 min per recipe at 1024^2
on a 2-core CPU; keep the machine otherwise idle (latency).
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.loaders import SOURCES
from edgestylegan.pipeline.quantize_tradeoff import read_recipes, run_quantize_tradeoff


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=None, help="YAML mapping of recipe name -> quantize overrides")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model (interleaved)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", default="operating_point", choices=SOURCES,
                        help="operating_point: stage quantize's export; student: stage quantize_student's")
    args = parser.parse_args()
    recipes = read_recipes(args.recipes) if args.recipes else None
    for row in run_quantize_tradeoff(recipes, args.params, args.root, args.repeats, args.threads,
                                     args.source):
        print(f"{row['recipe']}: PSNR {row['psnr_db_mean']:.2f} dB, {100 * row['int8_conv_mac_fraction']:.1f} % "
              f"int8 MACs, fd_enl0 {row['fd_enl0']:.1f}, {row['latency_vs_fp32']:.2f} x fp32")


if __name__ == "__main__":
    main()
