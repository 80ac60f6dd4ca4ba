"""Write PNGs from any generator file the pipeline produces.

    python -m edgestylegan.generate --model models/teacher.safetensors --seeds 0-15 --out out/teacher
    python -m edgestylegan.generate --model models/student.safetensors --seeds 0,5,7-9 --truncation 0.7 --out out/s

One image per seed, named seed0042.png; each latent comes from its own seeded generator, so any image can be
regenerated alone whatever the batch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from .errors import UserError
from .cli import entry_point
from .imaging import save_png, to_uint8
from .pipeline.loaders import load_model
from .models.mobilestylegan import latents_from_seeds


def parse_seeds(text: str) -> list[int]:
    seeds = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"--seeds {text!r}: use comma-separated integers and ranges, e.g. 0-15 or 0,3,7-9") from None
    if not seeds or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: need at least one non-negative seed")
    return seeds


@entry_point
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="any model file written by the pipeline")
    parser.add_argument("--seeds", default="0-7", help="e.g. 0-15 or 0,3,7-9")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--truncation", type=float, default=1.0, help="psi toward the stored mean style (1 = off)")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    if not 0.0 <= args.truncation <= 1.0:
        raise UserError(f"--truncation {args.truncation}: must be in [0, 1]")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    seeds = parse_seeds(args.seeds)
    model = load_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for start in tqdm(range(0, len(seeds), args.batch_size), desc="generate", unit="batch"):
            batch = seeds[start:start + args.batch_size]
            images = to_uint8(model(latents_from_seeds(batch, model.style_dim), truncation=args.truncation))
            for seed, image in zip(batch, images):
                save_png(image, out / f"seed{seed:04d}.png")
    print(f"wrote {len(seeds)} images to {out}")


if __name__ == "__main__":
    main()
