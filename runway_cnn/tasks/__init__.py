"""Tasks: everything about the labels of a prediction problem behind one interface
(:class:`~runway_cnn.tasks.base.Task`), one module per task, chosen by name from ``TASKS``."""
from __future__ import annotations

import inspect
from typing import Sequence

from runway_cnn.registry import Registry
from runway_cnn.tasks.base import Task
from runway_cnn.tasks.multi_label import MultiLabelTask
from runway_cnn.tasks.single_label import SingleLabelTask

TASKS: Registry[type[Task]] = Registry("task")
TASKS.register("single_label", SingleLabelTask)
TASKS.register("multi_label", MultiLabelTask)


def get_task(name: str, labels: Sequence[str], **options) -> Task:
    """The task registered as ``name`` over ``labels``, with its options (head, loss, …)."""
    return TASKS.get(name)(labels, **options)


def task_for_run(name: str, labels: Sequence[str], settings: dict) -> Task:
    """The task ``name`` over ``labels``, with the options its constructor takes picked from a
    run's settings (``FinetuneConfig``'s fields: ``label_smoothing``, ``dropout``, …)."""
    task_class = TASKS.get(name)
    accepted = inspect.signature(task_class.__init__).parameters
    return task_class(labels, **{k: v for k, v in settings.items()
                                 if k in accepted and k not in ("self", "labels")})


def task_from_config(config: dict) -> Task:
    """A task rebuilt from its :meth:`~runway_cnn.tasks.base.Task.config` (as saved in an
    export's metadata or a run's metrics); configs written before tasks had ``labels`` name them
    ``class_names``."""
    config = dict(config)
    name = config.pop("task", "single_label")
    labels = config.pop("labels", None) or config.pop("class_names")
    config.pop("class_names", None)
    return get_task(name, labels, **config)


__all__ = ["TASKS", "MultiLabelTask", "SingleLabelTask", "Task", "get_task", "task_for_run",
           "task_from_config"]
