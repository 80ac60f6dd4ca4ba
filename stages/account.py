"""DVC stage account@<variant>: parameters, non-zeros, bytes, MACs and latency of one variant.

    python stages/account.py --variant teacher        # or int8 | student | student-int8 | pruned-<amount>

Writes metrics/size/<variant>.json (`edgestylegan.artifacts.size.SizeRecord`): counts from the tensors, bytes of the
variant's deployable file and its gzip, stored elements per dtype, analytic MACs, and batch-1 latency per runtime in
account.runtimes, interleaved with the fp32 reference the variant's ratio needs (int8 over fp32, pruned over dense)
so that every ratio is within one run.
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.account import run_account


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", required=True, help="teacher | int8 | student | student-int8 | pruned-<amount>")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project folder holding models/ and metrics/")
    args = parser.parse_args()
    record = run_account(args.variant, args.params, args.root)
    lat = ", ".join(f"{k} {v:.0f} ms" for k, v in record.latency_ms.items()) or "not timed"
    ratios = ", ".join(f"{k} {v:.2f}" for k, v in record.latency_over_fp32_same_runtime.items())
    print(f"account {args.variant}: {record.bytes['file']['bytes'] / 1e6:.2f} MB, "
          f"{record.params['generator']['nonzero']:,} non-zero params, {record.macs['gmac']:.2f} GMAC; latency {lat}"
          + (f"; over the fp32 reference (same run) {ratios}" if ratios else ""))


if __name__ == "__main__":
    main()
