"""DVC stage fetch_teacher: materialise the teacher, gate it on OpenVINO parity, save it with a sample grid.

    python stages/fetch_teacher.py
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.teacher import run_fetch_teacher


@entry_point
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project root the artifact paths are relative to")
    args = parser.parse_args(argv)
    record = run_fetch_teacher(args.params, args.root)
    print(f"teacher: {record.resolution}^2, params mapping {record.params['mapping']:,}, "
          f"synthesis {record.params['synthesis']:,}")
    if record.parity:
        p = record.parity
        print(f"parity vs OpenVINO (f32) on {p['num_latents']} latents, psi={p['truncation']}: max |diff| "
              f"{p['max_abs']:.3g}, mean {p['mean_abs']:.3g}; OpenVINO's own f32 error vs float64: "
              f"{p['openvino_vs_float64_max_abs']:.3g}")


if __name__ == "__main__":
    main()
