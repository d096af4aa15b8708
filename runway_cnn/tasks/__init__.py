"""Tasks: everything about the labels of a prediction problem behind one interface
(:class:`~runway_cnn.tasks.base.Task`), one module per task, chosen by name from ``TASKS``."""
from __future__ import annotations

import inspect
from typing import Sequence

from runway_cnn.registry import Registry
from runway_cnn.tasks.attributes import AttributeTask
from runway_cnn.tasks.base import Task
from runway_cnn.tasks.multi_label import MultiLabelTask
from runway_cnn.tasks.single_label import SingleLabelTask

TASKS: Registry[type[Task]] = Registry("task")
TASKS.register("single_label", SingleLabelTask)
TASKS.register("multi_label", MultiLabelTask)
TASKS.register("attributes", AttributeTask)


def get_task(name: str, labels: Sequence[str], **options) -> Task:
    """The task registered as ``name`` over ``labels``, with its options (head, loss, …)."""
    return TASKS.get(name)(labels, **options)


def task_for_run(name: str, labels: Sequence[str], settings: dict) -> Task:
    """The task ``name`` over ``labels``, with the options its constructor takes picked from a
    run's settings (``FinetuneConfig``'s fields: ``label_smoothing``, ``dropout``, …)."""
    task_class = TASKS.get(name)
    return task_class(labels, **_accepted(task_class.__init__, settings))


def labels_for_run(name: str, raw_labels: Sequence, settings: dict) -> list[str]:
    """The label space of task ``name`` read from the data, with the options its
    ``label_space`` takes picked from a run's settings (``--attributes``, ``--min_count``, …)."""
    task_class = TASKS.get(name)
    return task_class.label_space(raw_labels, **_accepted(task_class.label_space, settings))


def _accepted(function, settings: dict) -> dict:
    parameters = inspect.signature(function).parameters
    return {k: v for k, v in settings.items()
            if k in parameters and k not in ("self", "cls", "labels", "raw_labels")}


def task_from_config(config: dict) -> Task:
    """A task rebuilt from its :meth:`~runway_cnn.tasks.base.Task.config` (as saved in an
    export's metadata or a run's metrics); configs written before tasks had ``labels`` name them
    ``class_names``."""
    config = dict(config)
    name = config.pop("task", "single_label")
    labels = config.pop("labels", None) or config.pop("class_names")
    config.pop("class_names", None)
    return get_task(name, labels, **config)


__all__ = ["TASKS", "AttributeTask", "MultiLabelTask", "SingleLabelTask", "Task", "get_task",
           "labels_for_run", "task_for_run", "task_from_config"]
