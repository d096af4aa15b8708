"""Stage-2 levers at a fixed plan (so that load cannot change what is trained): one dataset's
first ``--num_splits`` split(s), ``--stage2_epochs 4 --stage2_sizes full`` unless a variant says
otherwise, each variant a fresh run.

    PYTHONPATH=. python bench/bench_stage2_levers.py --variants baseline,no_smoothing,llrd \
        [--dataset_dir ../shared/data/zalando-dresses/brands] [--num_splits 1] [--out DIR]

- ``baseline``: the defaults (Adam at ``learning_rate / 5`` = 2e-4, label smoothing 0.1).
- ``no_smoothing``: ``--label_smoothing 0``.
- ``llrd``: layer-wise learning-rate decay (BEiT / ConvNeXt fine-tuning): the backbone's
  variables, stem to top, get the stage-2 rate times a factor growing geometrically from
  ``LLRD_BOTTOM`` to 1; the head gets 1. Built here only (an Adam whose ``update_step`` scales
  the rate per variable), to measure it before it goes into the package.
- ``progressive``: ``--stage2_sizes auto`` at 4 given epochs is the full size now; this gives
  the old ladder, 144 → 176 → 192 → 224.
- ``ema``: an exponential moving average of the weights (Keras' ``use_ema``, momentum
  ``EMA_MOMENTUM``), validated, kept and exported in place of the raw weights
  (``SwapEMAWeights(swap_on_epoch=True)`` before the checkpoint callback).
- ``venue_augmentation``: stronger crops and colour jitter against the runway venue shortcut
  (``VENUE_AUGMENTATION`` instead of the default ``Augmentation()``).

``--runway_season_seed S`` runs the variants on runway brands with each multi-season brand's
newest season held out (``bench/bench_time_budget.py``'s ``SeasonSplit``, seed S) instead of
``--dataset_dir``.

Writes ``OUT/<variant>.json`` (validation / test of each split, stage-2 history, minutes); a
variant whose file exists is not run again.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.data.preprocessing import Augmentation
from runway_cnn.training import trainer

REPO = Path(__file__).resolve().parents[1]
LLRD_BOTTOM = 0.1  # the stem's share of the stage-2 learning rate
EMA_MOMENTUM = 0.99  # Keras' default: an average over about the last 100 steps
VENUE_AUGMENTATION = Augmentation(min_crop_area=0.15, brightness=0.3, contrast=0.3,
                                  saturation=0.4)


class LayerwiseAdam(keras.optimizers.Adam):
    """Adam with a learning-rate factor per variable (by ``variable.path``; 1 if absent)."""

    def __init__(self, factors: dict[str, float], **kwargs):
        super().__init__(**kwargs)
        self.factors, self._by_index = factors, []

    def build(self, var_list):
        super().build(var_list)
        self._by_index = [self.factors.get(v.path, 1.0) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        # the TF backend passes the backing tf.Variable (no .path): look it up by index
        factor = self._by_index[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * factor)


def _llrd_compile(self, model: keras.Model, learning_rate) -> None:
    variables = self.backbone.model.trainable_variables  # stem → top, as the layers run
    last = max(1, len(variables) - 1)
    factors = {v.path: LLRD_BOTTOM ** (1 - i / last) for i, v in enumerate(variables)}
    with self.distribution.scope():
        model.compile(optimizer=LayerwiseAdam(factors, learning_rate=learning_rate),
                      loss=self.task.loss(), metrics=self.task.metrics(),
                      jit_compile=self.device.jit_compile)


def _ema_compile(self, model: keras.Model, learning_rate) -> None:
    with self.distribution.scope():
        model.compile(optimizer=keras.optimizers.Adam(learning_rate, use_ema=True,
                                                      ema_momentum=EMA_MOMENTUM),
                      loss=self.task.loss(), metrics=self.task.metrics(),
                      jit_compile=self.device.jit_compile)


def _ema_callbacks(*args, **kwargs) -> list[keras.callbacks.Callback]:
    # first, so that the checkpoint and the history see the averaged weights
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True), *PLAIN["callbacks"](*args, **kwargs)]


PLAIN = {"compile": trainer.FineTuner._compile, "callbacks": trainer.stage_callbacks,
         "augmentation": trainer.Augmentation}
PATCHES = {"llrd": {"compile": _llrd_compile},
           "ema": {"compile": _ema_compile, "callbacks": _ema_callbacks},
           "venue_augmentation": {"augmentation": lambda: VENUE_AUGMENTATION}}


def _patch(variant: str) -> None:
    """Puts ``variant``'s replacements (or the package's own code) into the trainer."""
    chosen = {**PLAIN, **PATCHES.get(variant, {})}
    trainer.FineTuner._compile = chosen["compile"]
    trainer.stage_callbacks = chosen["callbacks"]
    trainer.Augmentation = chosen["augmentation"]


VARIANTS = {
    "baseline": {},
    "no_smoothing": {"label_smoothing": 0.0},
    "llrd": {},
    "progressive": {"stage2_sizes": "144,176,192,224"},
    "ema": {},
    "venue_augmentation": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="baseline,no_smoothing,llrd")
    parser.add_argument("--dataset_dir",
                        default=str(REPO.parent / "shared" / "data" / "zalando-dresses" / "brands"))
    parser.add_argument("--num_splits", type=int, default=1)
    parser.add_argument("--runway_season_seed", type=int, default=None)
    parser.add_argument("--out", default="/tmp/bench_stage2_levers")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runway = None
    for variant in args.variants.split(","):
        path = out / f"{variant}.json"
        if path.exists():
            continue
        _patch(variant)
        settings = {"stage2_epochs": 4, "stage2_sizes": "full", **VARIANTS[variant]}
        start = time.perf_counter()
        if args.runway_season_seed is not None:
            from bench.bench_time_budget import SeasonSplit

            runway = runway or SeasonSplit(out)
            result = {"settings": settings, "seed": args.runway_season_seed,
                      **runway.run(out / variant, args.runway_season_seed, **settings)}
            path.write_text(json.dumps(result, indent=2, default=str))
            print(variant, result["validation"], result["test"], flush=True)
            continue
        summary = fine_tune(FinetuneConfig(dataset_dir=args.dataset_dir,
                                           train_dir=str(out / variant),
                                           num_splits=args.num_splits, verbose=2,
                                           **settings)).metrics
        runs = []
        for row in summary["runs"]:
            history = (out / variant / row["run"] / "stage2" / "history.csv").read_text()
            runs.append({"run": row["run"], "validation": row["validation_top1"],
                         "test": row["top1"], "stage2_history": history})
        result = {"settings": settings, "runs": runs,
                  "minutes": (time.perf_counter() - start) / 60}
        path.write_text(json.dumps(result, indent=2))
        print(variant, [(r["validation"], r["test"]) for r in runs], flush=True)


if __name__ == "__main__":
    main()
