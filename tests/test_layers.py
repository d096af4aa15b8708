"""The package's layers, read from its source: no module imports a layer above its own
(data → backbones → tasks → training → export → inference → the audit, the web app and the
Python API → the CLI), and only the ``python -m`` entry points (the package root's command
modules and the sub-packages' ``__main__``) import the CLI plumbing (``runway_cnn.cli``)."""
from __future__ import annotations

import ast
from pathlib import Path

import runway_cnn

PACKAGE = Path(runway_cnn.__file__).parent
LAYERS = [
    {"errors", "registry", "paths", "json_io", "output_checks", "train_dir", "export_dir",
     "progress", "plots"},  # used everywhere
    {"data"}, {"backbones"}, {"tasks"}, {"training"}, {"export"}, {"inference"},
    {"audit", "app", "api"}, {"cli"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
ENTRY_POINTS = {"checkpoints", "datasets", "evaluate", "finetune", "index", "predict",
                "recommend", "report", "serving"}  # runway_cnn/<command>.py: the commands


def _imported_units(tree: ast.AST) -> set[str]:
    """The package's top-level units a module imports (``runway_cnn.tasks.base`` → tasks),
    lazy imports inside functions included."""
    units = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "runway_cnn":
                continue
            units |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            units |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("runway_cnn.")}
    return units


def upward_imports(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        unit = parts[0]
        if unit == "__init__":  # the package root: the public API over every layer
            continue
        entry_point = unit in ENTRY_POINTS or parts[-1] == "__main__"
        rank = len(LAYERS) if entry_point else RANK[unit]
        for imported in _imported_units(ast.parse(path.read_text())) - {unit}:
            if imported not in RANK:
                found.append(f"{path.relative_to(package)} imports {imported}, in no layer")
            elif RANK[imported] > rank or (imported == "cli" and not entry_point):
                found.append(f"{path.relative_to(package)} imports {imported}")
    return found


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports() == []


def test_the_scan_sees_an_upward_import(tmp_path):
    """The scan itself: a tasks module that imports the trainer is reported."""
    fake = tmp_path / "runway_cnn"
    for unit in ("tasks", "training"):
        (fake / unit).mkdir(parents=True)
        (fake / unit / "__init__.py").write_text("")
    (fake / "tasks" / "bad.py").write_text("def f():\n"
                                          "    from runway_cnn.training.trainer import x\n")
    assert upward_imports(fake) == ["tasks/bad.py imports training"]
