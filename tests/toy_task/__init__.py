"""A toy attribute task, a whole task in one folder: what ``docs/adding_a_task.md`` describes,
with only the methods a task must have (the contract's defaults do the rest)."""
from toy_task.task import ATTRIBUTES, MaskedAttributeLoss, ToyAttributeTask

__all__ = ["ATTRIBUTES", "MaskedAttributeLoss", "ToyAttributeTask"]
