"""DVC stage report: regenerate reports/report.md, reports/metrics.csv, reports/plots/*.csv, reports/figures/*.png.

    dvc repro report        # after any stage changed; reads only files named by params (never globs)
"""
import argparse
from pathlib import Path

from edgestylegan.errors import UserError
from edgestylegan.cli import entry_point
from edgestylegan.config import SCHEMA, load_params
from edgestylegan.report.build import build_report


@entry_point
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project root holding metrics/ and reports/eval/")
    parser.add_argument("--out", default="reports")
    args = parser.parse_args(argv)
    optional = [s for s in ("prune", "quantize") if s in SCHEMA]
    p = load_params(args.params, ["eval", "report"] + optional)
    if "pruned" in p["report"]["variants"] and "prune" not in p:
        raise UserError("report.variants lists `pruned` but params have no prune section (stage prune)")
    extra = {}
    if "prune" in p:
        pr = p["prune"]
        extra["prune_targets"] = pr.get("targets", "?")
        extra["prune_recipe"] = f"{pr.get('method', '?')} / {pr.get('scope', '?')} / {pr.get('targets', '?')}"
    if "quantize" in p:
        extra["calibration"] = p["quantize"].get("calibration_samples", "?")
    amounts = p["prune"]["amounts"] if "prune" in p else []
    captions = build_report(p["eval"], p["report"], amounts, Path(args.root), Path(args.out), extra)
    for name, (ok, text) in captions.items():
        print(f"{name}: {'written' if ok else 'skipped: ' + text}")
    print(f"wrote {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
