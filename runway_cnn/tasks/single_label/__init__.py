"""Single-label classification: one class per image (a look's brand, a garment's category),
softmax over the classes."""
from runway_cnn.tasks.single_label.task import (
    C_GRID,
    LABEL_COLUMN,
    SingleLabelOptions,
    SingleLabelTask,
)

__all__ = ["C_GRID", "LABEL_COLUMN", "SingleLabelOptions", "SingleLabelTask"]
