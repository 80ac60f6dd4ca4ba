"""Every student architecture and width distilled, evaluated and timed against the original OpenVINO IR teacher in
one interleaved run: reports/benchmarks/students.{png,md,csv} (fd_enl0 vs latency).

    python scripts/student_family.py                                  # every member but the trunk-trained blaze
    python scripts/student_family.py --students blaze "blaze w0.5"
    python scripts/student_family.py --students mobilestylegan "blaze, trunk trained"   # + ~25 min
    python scripts/student_family.py --students "blaze, last block 256 ch, trunk trained" --out students_trunk

Needs models/teacher.safetensors, data/distill/pool.safetensors and data/eval/reference.npz
(`dvc repro distill_pool eval_reference`); trains in a scratch folder (nothing in models/ or metrics/ changes).
A few minutes per student on a 2-core CPU (distill with the params' settings, then evaluation).
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.student_family import DEFAULT_MEMBERS, FAMILY, run_student_family


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", nargs="+", default=DEFAULT_MEMBERS, choices=list(FAMILY))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    parser.add_argument("--out", default="students", help="file stem under reports/benchmarks/")
    args = parser.parse_args()
    for row in run_student_family(args.students, args.params, args.root, args.out):
        print(f"{row['student']}: fd_enl0 {row['fd_enl0']:.1f} ({row['fd_over_floor']:.2f} x floor), "
              f"{row['latency_ms']:.1f} ms = {row['latency_vs_teacher_ir']:.3f} x teacher IR ({row['runtime']})")


if __name__ == "__main__":
    main()
