"""Tasks: everything about the labels of a prediction problem (head, loss, metrics, targets,
export outputs, decoding, evaluation), one module per task."""
