"""DVC stage prune_profile: how much each targeted layer's output changes when it alone is pruned (OBS) to each
sparsity of `config.SENSITIVITY_LEVELS`, on the dense base model's calibration inputs.

    python stages/prune_profile.py

Outputs: reports/prune/sensitivity.json (`edgestylegan.artifacts.prune.SensitivityProfile`: the table that
prune.allocation = sensitivity splits the budget by) and reports/prune/sensitivity.png (the curves by layer kind).
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.prune_profile import run_prune_profile


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project folder holding models/ and reports/")
    args = parser.parse_args()
    profile = run_prune_profile(args.params, args.root)
    print(f"prune_profile: {len(profile.layers)} layers x {len(profile.levels)} sparsities -> reports/prune/")


if __name__ == "__main__":
    main()
