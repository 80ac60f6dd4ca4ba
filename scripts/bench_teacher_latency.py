"""Latency of our PyTorch MobileStyleGAN vs the original OpenVINO IR, in one run, same machine, same threads.

    python scripts/bench_teacher_latency.py [--model models/teacher.safetensors] [--repeats 7] [--warmup 2]

Batch 1, 1024x1024, mapping + synthesis, median of `--repeats` timed calls after `--warmup` untimed ones;
runtimes are interleaved round by round (`metrics.latency.measure`) so background load affects all alike.
Prints a table and optionally writes JSON with the medians and the ratio ours / OpenVINO.
"""
import argparse
import json

import torch

from edgestylegan.cli import entry_point
from edgestylegan.io.checkpoint import load_generator
from edgestylegan.runtimes.openvino_ir import OpenVINOGenerator
from edgestylegan.metrics.latency import generator_call, measure, openvino_ir_call


@entry_point  # Also applies the allocator setting the stages use (edgestylegan.allocator).
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/teacher.safetensors")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    runners = {
        "pytorch_eager_fp32": generator_call(load_generator(args.model)),
        "pytorch_eager_fp32_channels_last": generator_call(
            load_generator(args.model).to(memory_format=torch.channels_last)),
        "openvino_ir_fp32": openvino_ir_call(OpenVINOGenerator(precision="f32")),
    }
    results = measure(runners, repeats=args.repeats, warmup=args.warmup)
    anchor = results["openvino_ir_fp32"]["median_ms"]
    print(f"{'runtime (batch 1, 1024^2, ' + str(torch.get_num_threads()) + ' threads)':44s} {'median ms':>10s} "
          f"{'x OpenVINO':>10s}")
    for name, r in results.items():
        print(f"{name:44s} {r['median_ms']:10.1f} {r['median_ms'] / anchor:10.2f}")
    if args.json:
        summary = {name: {**r, "ratio_vs_openvino_ir": r["median_ms"] / anchor} for name, r in results.items()}
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
