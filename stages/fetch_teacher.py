"""DVC stage fetch_teacher: materialise the teacher, gate it on OpenVINO parity, save it with a sample grid."""
import argparse

import torch

from edgestylegan.errors import UserError
from edgestylegan.cli import entry_point
from edgestylegan.imaging import grid, resize, save_png, to_uint8
from edgestylegan.io.atomic import write_json
from edgestylegan.io.checkpoint import save_generator
from edgestylegan.io.teacher import materialize_teacher, openvino_parity
from edgestylegan.models.mobilestylegan import latents_from_seeds
from edgestylegan.config import load_params


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="models/teacher.safetensors")
    parser.add_argument("--metrics", default="metrics/teacher.json")
    parser.add_argument("--samples", default="reports/teacher/samples.png")
    args = parser.parse_args()
    p = load_params(args.params, ["teacher"])["teacher"]

    gen, info = materialize_teacher(p)
    metrics = {"params": {"mapping": sum(t.numel() for t in gen.mapping.parameters()),
                          "synthesis": sum(t.numel() for t in gen.synthesis.parameters())},
               "resolution": gen.resolution}
    if p["source"] == "random-face":
        parity = openvino_parity(gen, p["parity_seeds"], p["parity_truncation"])
        print(f"parity vs OpenVINO (f32) on {len(p['parity_seeds'])} latents, psi={p['parity_truncation']}: "
              f"max |diff| {parity['max_abs']:.3g}, mean {parity['mean_abs']:.3g}; OpenVINO's own f32 error vs "
              f"float64: {parity['openvino_vs_float64_max_abs']:.3g}")
        metrics["parity"] = {"max_abs": parity["max_abs"], "mean_abs": parity["mean_abs"],
                             "mapping_max_abs": parity["mapping_max_abs"],
                             "openvino_vs_float64_max_abs": parity["openvino_vs_float64_max_abs"],
                             "num_latents": len(p["parity_seeds"]),
                             "truncation": p["parity_truncation"], "tolerance": p["parity_tolerance"]}
        if parity["max_abs"] > p["parity_tolerance"]:
            raise UserError(f"teacher parity {parity['max_abs']:.3g} exceeds teacher.parity_tolerance "
                            f"{p['parity_tolerance']:.3g}; the loaded weights do not reproduce the IR")

    with torch.no_grad():
        images = gen(latents_from_seeds(p["sample_seeds"]), truncation=p["sample_truncation"])
    save_generator(gen, args.out, info)
    save_png(grid(to_uint8(resize(images, 256)), columns=4), args.samples)
    write_json(args.metrics, metrics)


if __name__ == "__main__":
    main()
