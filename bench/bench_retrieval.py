"""Retrieval and pre-training chains on real photos (issue 13), three parts:

- ``retrieval``: clothing-small, gallery ``train/`` (3,068 photos), queries ``test/`` (187):
  recall@1/5/10 and mAP@10 (a hit: the same garment class) with ImageNet EfficientNet-Lite0
  features and with the features of a clothing-small fine-tune (stage 2: 3 epochs of the whole
  backbone, peak 2e-4, so the backbone changes if validation improves); and the index build's
  speed against the plain feature pass on the same photos, side by side in one run.
- ``chain``: clothing-small test accuracy from ImageNet → clothing-small against ImageNet →
  clothing-other → clothing-small (the intermediate run fine-tunes its whole backbone: 8 epochs,
  peak 2e-4), seeds 0–2 (three intermediate runs; for 20 photos a class, three
  subsets too), with all training photos and with 20 a class; the target runs use the defaults.
- ``latency``: query latency for 1 and 100 queries against 10k, 100k and 1M synthetic unit
  vectors of the model's width (1,280) in clusters of ~50 (queries: perturbed gallery items),
  exact (numpy) against FAISS flat, IVF and HNSW, with build times and the approximate methods'
  recall of the exact top 10.

- ``speed``: the index build's embedding against the feature pass, warm, alternating.

    python bench/bench_retrieval.py [--parts retrieval,chain,latency,speed]
        [--out /tmp/bench_retrieval]
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.backbones.factory import get_backbone
from runway_cnn.backbones.features import extract_features
from runway_cnn.inference.batch import list_images
from runway_cnn.inference.retrieval import (
    Searcher,
    build_image_index,
    evaluate_image_index,
    faiss_available,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SMALL, OTHER = DATA / "clothing-small", DATA / "clothing-other"
# stage 2 as issue 14's probe did it: the whole backbone (BatchNorm frozen), Adam peaking at 2e-4
STAGE2 = dict(unfreeze="all", stage2_learning_rate=2e-4)


def retrieval(out: Path) -> dict:
    gallery, queries = SMALL / "train", SMALL / "test"
    files = [str(f) for f in list_images([gallery])]
    backbone = get_backbone("efficientnet_lite0")
    start = time.perf_counter()
    extract_features(backbone, files, 32)
    feature_seconds = time.perf_counter() - start
    start = time.perf_counter()
    summary = build_image_index("efficientnet_lite0", gallery, out / "imagenet_index",
                                progress=False)
    index_seconds = time.perf_counter() - start
    print(f"{len(files)} photos: feature pass {feature_seconds:.1f} s (backbone loaded before); "
          f"index build {index_seconds:.1f} s in all, {summary['embed_seconds']:.1f} s embedding "
          f"(ratios {index_seconds / feature_seconds:.2f}, "
          f"{summary['embed_seconds'] / feature_seconds:.2f})", flush=True)
    tuned = fine_tune(FinetuneConfig(dataset_dir=str(SMALL), train_dir=str(out / "small_s2"),
                                     **STAGE2, stage2_epochs=3, verbose=0))
    stage2 = tuned.metrics["stages"]["stage2"]
    build_image_index(tuned.export_path, gallery, out / "tuned_index", progress=False)
    results = {"feature_seconds": feature_seconds, "index_seconds": index_seconds,
               "embed_seconds": summary["embed_seconds"],
               "stage2_improved": stage2.get("improved_on_stage1"),
               "tuned_test_top1": tuned.metrics["test"]["top1"]}
    for name in ("imagenet", "tuned"):
        results[name] = evaluate_image_index(out / f"{name}_index", queries, backend="exact")
        print(name, json.dumps(results[name]), flush=True)
    print(f"fine-tune: stage 2 improved on stage 1: {results['stage2_improved']}; test top-1 "
          f"{results['tuned_test_top1']:.3f}", flush=True)
    return results


def speed(repeats: int = 2) -> dict:
    """The index build's embedding (:func:`embed_files`) against the plain feature pass on the
    same 3,068 photos, the same backbone, alternating, after one warm-up call of each."""
    from runway_cnn.inference.retrieval import embed_files, load_embedder

    files = list_images([SMALL / "train"])
    embedder = load_embedder("efficientnet_lite0")
    backbone = get_backbone("efficientnet_lite0")
    embed_files(embedder, files[:64])
    extract_features(backbone, [str(f) for f in files[:64]], 32)
    seconds = {"index": [], "features": []}
    for _ in range(repeats):
        start = time.perf_counter()
        embed_files(embedder, files)
        seconds["index"].append(time.perf_counter() - start)
        start = time.perf_counter()
        extract_features(backbone, [str(f) for f in files], 32)
        seconds["features"].append(time.perf_counter() - start)
    ratio = float(np.mean(seconds["index"]) / np.mean(seconds["features"]))
    print(f"{len(files)} photos, warm: index embedding {seconds['index']} s, feature pass "
          f"{seconds['features']} s: ratio {ratio:.2f}", flush=True)
    return {**seconds, "ratio": ratio}


def _subset(out: Path, per_class: int, seed: int) -> Path:
    """clothing-small with ``per_class`` training photos a class (copies: the folder scan
    refuses links that leave their class folder), validation and test whole."""
    root = out / f"small_{per_class}_seed{seed}"
    if root.exists():
        return root
    rng = np.random.default_rng(seed)
    for split in ("train", "validation", "test"):
        for folder in sorted((SMALL / split).iterdir()):
            if not folder.is_dir():
                continue
            photos = sorted(folder.iterdir())
            if split == "train":
                photos = [photos[i] for i in sorted(rng.choice(len(photos), per_class,
                                                               replace=False))]
            (root / split / folder.name).mkdir(parents=True)
            for photo in photos:
                shutil.copy(photo, root / split / folder.name / photo.name)
    return root


def chain(out: Path, seeds: list[int]) -> dict:
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        intermediate = fine_tune(FinetuneConfig(
            dataset_dir=str(OTHER), train_dir=str(out / f"other_seed{seed}"), seed=seed,
            **STAGE2, stage2_epochs=8, verbose=0))
        s2 = intermediate.metrics["stages"]["stage2"]
        print(f"clothing-other seed {seed}: test top-1 {intermediate.metrics['test']['top1']:.3f},"
              f" stage 2 improved: {s2.get('improved_on_stage1')} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        for data, size in ((SMALL, "all"), (_subset(out, 20, seed), "20")):
            if size == "all" and seed != seeds[0]:
                starts = (("clothing-other", intermediate.export_path),)  # ImageNet: the same
            else:
                starts = (("imagenet", None), ("clothing-other", intermediate.export_path))
            for name, start_from in starts:
                result = fine_tune(FinetuneConfig(
                    dataset_dir=str(data), model_name=start_from and f"run:{start_from}", seed=seed,
                    train_dir=str(out / f"target_{size}_{name}_seed{seed}"), verbose=0))
                rows.append({"train": size, "start": name, "seed": seed,
                             "validation": result.metrics["validation"]["top1"],
                             "test": result.metrics["test"]["top1"],
                             "chain": result.metrics["chain"]})
                print(f"  clothing-small ({size} a class) from {name}: validation "
                      f"{rows[-1]['validation']:.3f} test {rows[-1]['test']:.3f}", flush=True)
    return {"rows": rows}


def _clustered(rng: np.random.Generator, size: int, width: int, per_cluster: int = 50
               ) -> np.ndarray:
    """Unit vectors in clusters of about ``per_cluster`` (an item and its look-alikes, as real
    embeddings are; uniformly random vectors in 1,280 dimensions have no near neighbours for an
    approximate index to find): a random centre plus noise of norm 0.6, normalised."""
    centres = rng.standard_normal((max(1, size // per_cluster), width), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gallery = np.empty((size, width), np.float32)
    for start in range(0, size, 100_000):  # in slices: the noise of 1M vectors is 5 GB
        stop = min(size, start + 100_000)
        part = centres[rng.integers(0, len(centres), stop - start)]
        part += 0.6 * rng.standard_normal((stop - start, width), dtype=np.float32) / \
            np.sqrt(width)
        gallery[start:stop] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return gallery


def latency(sizes: list[int], width: int = 1280, repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    results = {}
    backends = ["exact"] + (["faiss-flat", "faiss-ivf", "faiss-hnsw"] if faiss_available()
                            else [])
    for size in sizes:
        gallery = _clustered(rng, size, width)
        queries = gallery[rng.choice(size, 100, replace=False)] + \
            0.3 * rng.standard_normal((100, width), dtype=np.float32) / np.sqrt(width)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        truth = None
        for backend in backends:
            if backend == "faiss-hnsw" and size > 200_000:
                print(f"{size}: faiss-hnsw skipped (building it takes too long here; see the "
                      "100k row)", flush=True)
                continue
            start = time.perf_counter()
            searcher = Searcher(gallery, backend)
            build = time.perf_counter() - start
            row = {"build_seconds": build}
            for count in (1, 100):
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    _, found = searcher.search(queries[:count], 10)
                    times.append(time.perf_counter() - start)
                row[f"ms_{count}"] = 1000 * float(np.median(times))
            if backend == "exact":
                truth = found
            row["recall_of_exact_top10"] = float(np.mean(
                [len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
            results[f"{size} {backend}"] = row
            print(f"{size:>8d} {backend:11s} build {build:7.2f} s  1 query {row['ms_1']:8.2f} ms"
                  f"  100 queries {row['ms_100']:9.1f} ms  recall of exact top-10 "
                  f"{row['recall_of_exact_top10']:.3f}", flush=True)
            del searcher
        del gallery
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_retrieval"))
    parser.add_argument("--parts", default="retrieval,chain,latency")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for part in args.parts.split(","):
        if part == "retrieval":
            results[part] = retrieval(args.out)
        elif part == "chain":
            results[part] = chain(args.out, [int(s) for s in args.seeds.split(",")])
        elif part == "speed":
            results[part] = speed()
        elif part == "latency":
            results[part] = latency([int(s) for s in args.sizes.split(",")])
        (args.out / f"results_{part}.json").write_text(json.dumps(results[part], indent=1))


if __name__ == "__main__":
    main()
