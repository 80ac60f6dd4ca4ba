"""DVC stage report: regenerate reports/report.md, reports/metrics.csv, reports/plots/*.csv, reports/figures/*.png.

    dvc repro report        # reads only the artifacts of the variants params name (never globs)
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.paths import Paths
from edgestylegan.pipeline.report import run_report


@entry_point
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project folder holding metrics/ and reports/")
    args = parser.parse_args(argv)
    captions = run_report(args.params, args.root)
    for name, (ok, text) in captions.items():
        print(f"{name}: {'written' if ok else 'skipped: ' + text}")
    print(f"wrote {Paths(args.root).reports / 'report.md'}")


if __name__ == "__main__":
    main()
