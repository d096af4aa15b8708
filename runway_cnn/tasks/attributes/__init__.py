"""Garment attributes: several attributes per image (type, pattern, neckline, sleeve length …),
one softmax per attribute over its values, on one shared backbone. Data: ``--labels_csv`` with a
``filename`` column and one column per attribute (``--attributes a,b,c`` picks some); an empty
cell means unknown for that image (a skirt has no sleeve length) and weighs nothing in the loss,
the stage-1 regression, the metrics or the splits.

- Label space: ``attribute=value`` names, attribute by attribute in CSV column order, values
  sorted; values with fewer than ``--min_count`` images in the CSV are merged into ``other``
  (``--rare merge``) or become unknown cells (``--rare drop``); the data report counts both.
- Splits: iterative stratification of the one-hot attribute values
  (:func:`runway_cnn.data.splits.multilabel_split`, as for multi-label).
- Imbalance (``--balance``): ``class_weight`` weighs each known cell by scikit-learn's "balanced"
  weight of its value; ``oversample`` is repeat-factor sampling (Gupta et al., LVIS, 2019) as
  per-image weights: an image counts max(1, √(t / f)) times, f the share of its rarest value among
  the images where that attribute is known and t = 1 / (the attribute's number of values).
- Stage 1: one multinomial logistic regression per attribute on its known rows (all solved
  together: :class:`~runway_cnn.tasks.logistic.SoftmaxPerAttribute`), C per attribute chosen on
  validation accuracy (balanced accuracy when balancing).
- Figures per attribute: accuracy, macro-F1, balanced accuracy, the confusion matrix, and the same
  for the majority value of the training split beside them; their means over attributes.
"""
from runway_cnn.tasks.attributes.task import (
    BALANCE,
    C_GRID,
    FILENAME_COLUMN,
    OTHER,
    RARE,
    AttributeOptions,
    AttributeTask,
    MaskedAttributeAccuracy,
)

__all__ = ["BALANCE", "C_GRID", "FILENAME_COLUMN", "OTHER", "RARE", "AttributeOptions",
           "AttributeTask", "MaskedAttributeAccuracy"]
