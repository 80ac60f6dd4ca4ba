"""Where the int8 model's error comes from: each activation quantizer of stage quantize's OpenVINO int8 IR alone, and
left out, as image PSNR against fp32 on the validation latents, with its own clipping and rounding SQNR.

    python scripts/quantize_sensitivity.py                    # models/quantized/int8.xml (stage quantize)
    python scripts/quantize_sensitivity.py --source student   # models/quantized_student/int8.xml (quantize_student)

Writes reports/benchmarks/quantize_sensitivity{,_student}.{csv,md}. About 2 min for the 1024^2 teacher on a 2-core CPU.
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.loaders import SOURCES
from edgestylegan.pipeline.quantize_sensitivity import run_quantize_sensitivity


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", default="operating_point", choices=SOURCES)
    args = parser.parse_args()
    for row in run_quantize_sensitivity(args.params, args.root, args.threads, args.source):
        print(f"{row['quantizer']}: alone {row['psnr_db_alone']:.2f} dB, without {row['psnr_db_without']:.2f} dB, "
              f"SQNR clipping {row['sqnr_db_clipping']:.1f} / rounding {row['sqnr_db_rounding']:.1f} dB")


if __name__ == "__main__":
    main()
