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
from runway_cnn.training import trainer

REPO = Path(__file__).resolve().parents[1]
LLRD_BOTTOM = 0.1  # the stem's share of the stage-2 learning rate


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


VARIANTS = {
    "baseline": {},
    "no_smoothing": {"label_smoothing": 0.0},
    "llrd": {},
    "progressive": {"stage2_sizes": "144,176,192,224"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="baseline,no_smoothing,llrd")
    parser.add_argument("--dataset_dir",
                        default=str(REPO.parent / "shared" / "data" / "zalando-dresses" / "brands"))
    parser.add_argument("--num_splits", type=int, default=1)
    parser.add_argument("--out", default="/tmp/bench_stage2_levers")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plain_compile = trainer.FineTuner._compile
    for variant in args.variants.split(","):
        path = out / f"{variant}.json"
        if path.exists():
            continue
        trainer.FineTuner._compile = _llrd_compile if variant == "llrd" else plain_compile
        settings = {"stage2_epochs": 4, "stage2_sizes": "full", **VARIANTS[variant]}
        start = time.perf_counter()
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
