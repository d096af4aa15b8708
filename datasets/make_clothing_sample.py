"""Make datasets/clothing-sample from clothing-dataset-small (CC0): 6 classes, 40/10/10 per class.

    python datasets/make_clothing_sample.py [--source /work/shared/data/clothing-small]

train/ is drawn from the source's train/, validation/ from its validation/, and test/ from its
test/, topped up with source-validation images not already taken when a class has fewer than
``--test`` test images (dress, hat), so no source-train image reaches the sample's test split.
Images are downscaled to a longest side of 256 px and saved as JPEG quality 90. Deterministic.
"""
from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from PIL import Image

CLASSES = ("dress", "hat", "pants", "shoes", "shorts", "t-shirt")
HERE = Path(__file__).resolve().parent


def pick(args: argparse.Namespace, name: str) -> dict[str, list[Path]]:
    """split → source files of class ``name``."""
    rng = random.Random(f"{args.seed}-{name}")
    pool = {s: sorted((args.source / s / name).iterdir()) for s in ("train", "validation", "test")}
    train = rng.sample(pool["train"], args.train)
    val = rng.sample(pool["validation"], args.validation)
    test = rng.sample(pool["test"], min(args.test, len(pool["test"])))
    spare = [p for p in pool["validation"] if p not in val]
    test += rng.sample(spare, args.test - len(test))
    return {"train": train, "validation": val, "test": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/shared/data/clothing-small"))
    parser.add_argument("--out", type=Path, default=HERE / "clothing-sample")
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--validation", type=int, default=10)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--size", type=int, default=256, help="longest side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    for name in CLASSES:
        for split, files in pick(args, name).items():
            folder = args.out / split / name
            folder.mkdir(parents=True)
            for src in files:
                with Image.open(src) as im:
                    im = im.convert("RGB")
                    im.thumbnail((args.size, args.size), Image.Resampling.LANCZOS)
                    im.save(folder / f"{src.stem}.jpg", "JPEG", quality=90, optimize=True)
    shutil.copy(args.source / "LICENSE", args.out / "LICENSE")


if __name__ == "__main__":
    main()
