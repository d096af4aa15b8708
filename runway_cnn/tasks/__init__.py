"""Tasks: everything about the labels of a prediction problem behind one interface
(:class:`~runway_cnn.tasks.base.Task`), one folder per task, chosen by name from
``TASKS``. A task's own flags are the fields of its :class:`~runway_cnn.tasks.base.TaskOptions`
dataclass; adding a task is its folder and one line below."""
from __future__ import annotations

import inspect
from typing import Sequence

from runway_cnn.errors import RunwayError
from runway_cnn.registry import Registry
from runway_cnn.tasks.attributes import AttributeTask
from runway_cnn.tasks.base import Task, TaskOptions
from runway_cnn.tasks.multi_label import MultiLabelTask
from runway_cnn.tasks.regression import RegressionTask
from runway_cnn.tasks.single_label import SingleLabelTask

TASKS: Registry[type[Task]] = Registry("task")
TASKS.register("single_label", SingleLabelTask)
TASKS.register("multi_label", MultiLabelTask)
TASKS.register("attributes", AttributeTask)
TASKS.register("regression", RegressionTask)


def get_task(name: str, labels: Sequence[str], **options) -> Task:
    """The task registered as ``name`` over ``labels``, with its options (head, loss, …)."""
    return TASKS.get(name)(labels, **options)


def task_options(name: str, settings: dict) -> TaskOptions:
    """Task ``name``'s options from ``settings`` (a run's flags or its ``config.json``): its own
    fields taken, the rest of the dict ignored. A value the task cannot use is a one-line
    error."""
    options_class = TASKS.get(name).options_class
    try:
        return options_class(**{f.name: settings[f.name] for f in options_class.fields()
                                if f.name in settings})
    except (TypeError, ValueError) as error:
        raise RunwayError(f"--task {name}: {error}") from None


def option_defaults() -> dict[str, list]:
    """Every registered task's option names, each with its default in each task that has it."""
    defaults: dict[str, list] = {}
    for name in TASKS:
        for f in TASKS.get(name).options_class.fields():
            defaults.setdefault(f.name, []).append(f.default)
    return defaults


def foreign_options(name: str, settings: dict) -> list[str]:
    """Keys of ``settings`` that are another task's options set away from that task's default:
    flags task ``name`` would silently ignore (``--head mlgcn --task single_label``). An older
    run's ``config.json`` holds every task's options at their defaults; those pass."""
    own = {f.name for f in TASKS.get(name).options_class.fields()}
    defaults = option_defaults()
    return sorted(k for k, v in settings.items()
                  if k in defaults and k not in own and v not in defaults[k])


def task_for_run(name: str, labels: Sequence[str], settings: dict) -> Task:
    """The task ``name`` over ``labels`` for a run with ``settings``: its options, and the run's
    ``dropout`` (a setting every head shares) where the task's constructor takes one."""
    task_class, options = TASKS.get(name), task_options(name, settings).to_dict()
    if "dropout" in settings and "dropout" in inspect.signature(task_class).parameters:
        options["dropout"] = settings["dropout"]
    return task_class(labels, **options)


def labels_for_run(name: str, raw_labels: Sequence, settings: dict) -> list[str]:
    """The label space of task ``name`` read from the data, under its options in ``settings``
    (``--attributes``, ``--min_count``, ``--target_column`` …)."""
    return TASKS.get(name).label_space(raw_labels, **task_options(name, settings).to_dict())


def task_from_config(config: dict) -> Task:
    """A task rebuilt from its :meth:`~runway_cnn.tasks.base.Task.config` (as saved in an
    export's metadata or a run's metrics); configs written before tasks had ``labels`` name them
    ``class_names``."""
    config = dict(config)
    name = config.pop("task", "single_label")
    labels = config.pop("labels", None) or config.pop("class_names")
    config.pop("class_names", None)
    return get_task(name, labels, **config)


__all__ = ["TASKS", "AttributeTask", "MultiLabelTask", "RegressionTask", "SingleLabelTask",
           "Task", "TaskOptions", "foreign_options", "get_task", "labels_for_run",
           "option_defaults", "task_for_run", "task_from_config", "task_options"]
