"""Latency of our PyTorch MobileStyleGAN vs the original OpenVINO IR, in one run, same machine, same threads.

    python scripts/bench_teacher_latency.py [--model models/teacher.safetensors] [--repeats 7] [--warmup 2]
        [--compare models/student.safetensors other/student.safetensors ...]

Batch 1, mapping + synthesis, median of `--repeats` timed calls after `--warmup` untimed ones; runtimes are
interleaved round by round (`metrics.latency.measure`) so background load affects all alike. `--compare` adds
float generator files (any resolution, e.g. students), each compiled by OpenVINO f32 (their fastest runtime here),
to the same interleaved run. Prints a table with the ratio to the original OpenVINO IR at 1024^2, the CPU's ISA
flags, and optionally writes JSON.
"""
import argparse
import json

import torch

from edgestylegan.cli import entry_point
from edgestylegan.io.checkpoint import load_generator
from edgestylegan.runtimes.openvino_ir import OpenVINOGenerator
from edgestylegan.metrics.latency import cpu_info, generator_call, measure, openvino_ir_call
from edgestylegan.models.macs import analytic_macs
from edgestylegan.runtimes.onnx import openvino_generator


@entry_point  # Also applies the allocator setting the stages use (edgestylegan.allocator).
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/teacher.safetensors")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compare", nargs="*", default=[], help="float generator files timed on OpenVINO f32")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    runners = {
        "pytorch_eager_fp32": generator_call(load_generator(args.model)),
        "pytorch_eager_fp32_channels_last": generator_call(
            load_generator(args.model).to(memory_format=torch.channels_last)),
        "openvino_ir_fp32": openvino_ir_call(OpenVINOGenerator(precision="f32")),
    }
    macs = {}
    for path in args.compare:
        gen = load_generator(path)
        name = f"{path} (openvino fp32, {gen.resolution}^2)"
        runners[name] = generator_call(openvino_generator(gen))
        macs[name] = analytic_macs(gen.config)["total"]
    results = measure(runners, repeats=args.repeats, warmup=args.warmup)
    anchor = results["openvino_ir_fp32"]["median_ms"]
    cpu = cpu_info()
    print(f"CPU: {cpu}")
    print(f"{'runtime (batch 1, 1024^2 unless stated, ' + str(torch.get_num_threads()) + ' threads)':60s} "
          f"{'median ms':>10s} {'x OpenVINO IR':>14s}")
    for name, r in results.items():
        print(f"{name:60s} {r['median_ms']:10.1f} {r['median_ms'] / anchor:14.3f}")
    if args.json:
        summary = {name: {**r, "ratio_vs_openvino_ir": r["median_ms"] / anchor, **({"macs": macs[name]}
                                                                                   if name in macs else {})}
                   for name, r in results.items()}
        summary["cpu"] = cpu
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
