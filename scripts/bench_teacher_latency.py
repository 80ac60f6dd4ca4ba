"""Latency of our PyTorch MobileStyleGAN vs the original OpenVINO IR, in one run, same machine, same threads.

    python scripts/bench_teacher_latency.py [--model models/teacher.safetensors] [--repeats 7] [--warmup 2]

Batch 1, 1024x1024, synthesis network only (the mapping net is ~0.1 ms and identical in both), median of
`--repeats` timed calls after `--warmup` untimed ones; runtimes are interleaved round by round so background
load affects all of them alike. Prints a table and writes JSON with the medians and the ratio ours/OpenVINO.
"""
import argparse
import json
import statistics
import time

import torch

from edgestylegan.io.checkpoint import load_generator
from edgestylegan.io.openvino_runner import OpenVINOGenerator
from edgestylegan.models.mobilestylegan import latents_from_seeds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/teacher.safetensors")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    gen = load_generator(args.model)
    gen_cl = load_generator(args.model).to(memory_format=torch.channels_last)
    ov = OpenVINOGenerator(precision="f32")
    with torch.inference_mode():
        w = gen.style(latents_from_seeds([0]))
    w_np = w.numpy()

    def eager(model):
        def run():
            with torch.inference_mode():
                model.synthesis(w)
        return run

    runtimes = {
        "pytorch_eager_fp32": eager(gen),
        "pytorch_eager_fp32_channels_last": eager(gen_cl),
        "openvino_ir_fp32": lambda: ov.synthesize(w_np),
    }
    for run in runtimes.values():
        for _ in range(args.warmup):
            run()
    times = {name: [] for name in runtimes}
    for _ in range(args.repeats):
        for name, run in runtimes.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    anchor = medians["openvino_ir_fp32"]
    result = {"threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup,
              "median_ms": medians, "ratio_vs_openvino": {k: v / anchor for k, v in medians.items()}}
    print(f"{'runtime':36s} {'median ms':>10s} {'x OpenVINO':>10s}")
    for name, ms in medians.items():
        print(f"{name:36s} {ms:10.1f} {ms / anchor:10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
