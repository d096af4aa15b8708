"""Multi-label classification: several labels per image (an outfit's styles, a garment's tags),
one sigmoid per label. Data: ``--labels_csv`` with ``filename,labels``, labels ``;``-separated (an
empty cell: none of them).

- Splits: iterative stratification (:func:`runway_cnn.data.splits.multilabel_split`), so every
  split keeps the label proportions and rare labels reach every split.
- Heads: ``sigmoid`` (dense logits) or ``mlgcn`` (:mod:`runway_cnn.tasks.mlgcn`); losses ``bce``
  or ``asl`` (asymmetric loss). Stage 1 solves the sigmoid head on cached features as one-vs-rest
  logistic regression, C chosen on validation mAP.
- Decisions: one threshold per label, the one with the best F1 on validation
  (:meth:`MultiLabelTask.calibrate`), stored with the model; ``--threshold`` sets one for all.
- Figures (as the ML-GCN paper reports them): mAP (mean over labels of scikit-learn's average
  precision), per-label AP, and CP, CR, CF1 (per-label precision and recall averaged, their
  harmonic mean) and OP, OR, OF1 (over all image-label pairs), at the thresholds and for the
  top-3 labels of each image.
"""
from runway_cnn.tasks.multi_label.task import (
    C_GRID,
    HEADS,
    LABELS_COLUMN,
    LOSSES,
    SEPARATOR,
    MultiLabelOptions,
    MultiLabelTask,
)

__all__ = ["C_GRID", "HEADS", "LABELS_COLUMN", "LOSSES", "SEPARATOR", "MultiLabelOptions",
           "MultiLabelTask"]
