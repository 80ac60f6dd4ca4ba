"""Compare the quality metrics of two runs of the study (e.g. before and after a refactor, same machine).

    python scripts/compare_metrics.py OLD_METRICS_DIR NEW_METRICS_DIR [--rtol 1e-5]

Every numeric leaf of every metrics JSON is compared by its dotted key, except timings (latency, seconds,
throughput), which differ from run to run. The account stage's single `size.json` of older runs is mapped onto the
per-variant `size/<variant>.json` files. Prints keys that differ beyond rtol, keys only on one side, and a summary;
exits 1 when any shared key differs.
"""
import argparse
import json
import math
import sys
from pathlib import Path

TIMING_WORDS = ("latency", "seconds", "per_s", "_ms", "time", "cpu", "isa")


def leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield prefix, float(node)


def flatten_dir(folder: Path) -> dict[str, float]:
    out = {}
    for path in sorted(folder.rglob("*.json")):
        rel = path.relative_to(folder).with_suffix("").as_posix()
        data = json.loads(path.read_text())
        if rel == "size":   # older layout: one file, variants as top-level keys, pruned nested by amount
            for variant, entry in data.items():
                if variant == "pruned":
                    for amount, sub in entry.items():
                        out.update({f"size/pruned-{amount}:{k}": v for k, v in leaves(sub)})
                elif isinstance(entry, dict):
                    out.update({f"size/{variant}:{k}": v for k, v in leaves(entry)})
            continue
        out.update({f"{rel}:{k}": v for k, v in leaves(data)})
    return {k: v for k, v in out.items() if not any(w in k.lower() for w in TIMING_WORDS)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-5)
    args = parser.parse_args()
    old, new = flatten_dir(args.old), flatten_dir(args.new)
    shared = sorted(set(old) & set(new))
    differ = [k for k in shared if not math.isclose(old[k], new[k], rel_tol=args.rtol, abs_tol=1e-12)]
    for key in differ:
        print(f"DIFFERS {key}: {old[key]!r} -> {new[key]!r}")
    for key in sorted(set(old) - set(new)):
        print(f"only in {args.old}: {key}")
    for key in sorted(set(new) - set(old)):
        print(f"only in {args.new}: {key}")
    print(f"{len(shared)} shared quality keys, {len(differ)} differ beyond rtol {args.rtol}; "
          f"{len(set(old) - set(new))} only old, {len(set(new) - set(old))} only new")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
