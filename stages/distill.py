"""DVC stage distill: train a MobileStyleGAN student from the teacher (issue 5), export it, log curves and samples.

    dvc repro distill                                            # CPU / one GPU
    torchrun --standalone --nproc_per_node 4 stages/distill.py   # several GPUs (rank 0 writes everything)

An interrupted run resumes from data/cache/distill/resume.pt (outside DVC's outs) when params, teacher and pool are
unchanged; the file is removed once the student is written.
"""
import argparse

from edgestylegan.cli import entry_point
from edgestylegan.pipeline.distill import run_distill


@entry_point
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".", help="project root (artifact layout: edgestylegan.paths)")
    args = parser.parse_args()
    record = run_distill(args.params, args.root)
    if record is not None:  # Rank 0 (the only process without torchrun).
        init = record.val_at_init["psnr_db"] if record.val_at_init else float("nan")
        print(f"student: held-out PSNR vs teacher {record.val['psnr_db']:.2f} dB (at init {init:.2f} dB) after "
              f"{record.train['steps']} steps, {record.train['seconds']:.0f} s")


if __name__ == "__main__":
    main()
