"""Backbone forward speed under TensorFlow thread settings (``tf.config.threading``).

    PYTHONPATH=. python bench/bench_threads.py [--model_name efficientnet_lite0] [--repeats 8]

Each setting runs in its own process (thread pools are fixed once TensorFlow starts): one
32-image batch at the backbone's size, ``training=False``, 2 warm-up calls, then ``--repeats``
timed calls. Prints images/s and CPU time / wall time (how many cores were busy).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SETTINGS = [(0, 0), (2, 1), (2, 2), (1, 1), (4, 1)]  # (intra-op, inter-op); 0 = TF's default


def measure(model_name: str, intra: int, inter: int, repeats: int) -> str:
    import numpy as np
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    from runway_cnn.backbones.factory import get_backbone

    backbone = get_backbone(model_name)
    size = backbone.preprocessing.image_size
    images = tf.constant(np.random.default_rng(0).random((32, size, size, 3), np.float32))
    forward = tf.function(lambda x: backbone.model(x, training=False))
    for _ in range(2):
        forward(images).numpy()
    cpu, start = os.times(), time.perf_counter()
    for _ in range(repeats):
        forward(images).numpy()
    wall, end = time.perf_counter() - start, os.times()
    busy = (end.user - cpu.user + end.system - cpu.system) / wall
    name = lambda n: str(n) if n else "default"
    return (f"| {name(intra)} | {name(inter)} | {repeats * 32 / wall:.1f} | {busy:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_name", default="efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.model_name, *args.one, args.repeats))
        return
    print("| intra-op threads | inter-op threads | images/s | CPU / wall |")
    print("|---|---|---:|---:|")
    for intra, inter in SETTINGS:
        out = subprocess.run([sys.executable, __file__, "--model_name", args.model_name,
                              "--repeats", str(args.repeats), "--one", str(intra), str(inter)],
                             capture_output=True, text=True, check=True).stdout
        print(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
