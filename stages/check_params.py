"""DVC stage check_params: validate every section and key of params.yaml before any other stage runs."""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.check import run_check_params


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    keys = run_check_params(args.params, args.root)
    print(f"params: {len(keys)} keys valid in {args.params}")


if __name__ == "__main__":
    main()
