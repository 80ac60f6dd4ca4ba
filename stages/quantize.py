"""DVC stages quantize and quantize_student: static int8 post-training quantization of a float generator.

    python stages/quantize.py                    # the operating point prune.amount (0 = the dense prune.base)
    python stages/quantize.py --source student   # models/student.safetensors -> models/quantized_student

Outputs (all written only after everything succeeded and the quantize.engine file reached quantize.min_psnr on the
held-out latents): models/quantized{,_student}/ (float.onnx, int8.xml + int8.bin from NNCF, int8.onnx from ONNX
Runtime), metrics/quantize{,_student}.json (int8-vs-fp32 PSNR per engine, the OpenVINO kernel profile;
`edgestylegan.artifacts.quantize`), reports/quantize{,_student}/layers.csv. See `edgestylegan.pipeline.quantize`.
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.loaders import SOURCES
from edgestylegan.pipeline.quantize import run_quantize


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=SOURCES, default="operating_point",
                        help="operating_point: prune.amount of prune.base (stage quantize); student: the distilled "
                             "student (stage quantize_student)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project folder holding models/, metrics/, reports/")
    parser.add_argument("--threads", type=int, default=0, help="torch/ORT/OpenVINO threads (0: library default)")
    args = parser.parse_args()
    record = run_quantize(args.source, args.params, args.root, args.threads)
    int8 = record.openvino_profile["int8"]
    print(f"quantize ({args.source}): PSNR int8 vs fp32 on {record.num_fidelity_latents} held-out latents "
          + ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f} dB'}" for k, v in record.psnr_db.items())
          + f"; OpenVINO ran {int8['int8_conv_mac_fraction']:.1%} of the conv MACs in int8 kernels")


if __name__ == "__main__":
    main()
