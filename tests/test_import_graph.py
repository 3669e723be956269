"""The package's import graph points one way: geometry <- flow <- models, protein <- train <- bench <- cli.

Every ``import proteinflow.X`` / ``from proteinflow.X import ...`` in every module (top level or inside a
function) is read with :mod:`ast`; an import of a higher layer (upward) or of the other package in the
same layer (sideways: models and protein) fails the test with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "proteinflow"

#: Layer of each subpackage (top-level helper modules such as ``atomic`` sit below everything).
LAYERS: dict[str, int] = {
    "atomic": 0,
    "timing": 0,
    "geometry": 1,
    "flow": 2,
    "models": 3,
    "protein": 3,
    "train": 4,
    "bench": 5,
    "cli": 6,
}


def _area(module: str) -> str | None:
    """``proteinflow.flow.paths`` -> ``flow``; the package root itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "proteinflow" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.startswith("proteinflow.")]


def violations(package: Path = PACKAGE) -> list[str]:
    """Every upward or sideways import in ``package``, as ``file:line: a -> b``."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if len(rel.parts) == 1:
            src = rel.stem
            if src in ("__init__", "__main__"):
                continue  # the package root re-exports the public API
        else:
            src = rel.parts[0]
        if src not in LAYERS:
            problems.append(f"{rel}: area {src!r} has no layer in LAYERS")
            continue
        for line, name in _imports(path):
            dst = _area(name)
            if dst is None or dst == src:
                continue
            if dst not in LAYERS:
                problems.append(f"{rel}:{line}: imports unknown area {name}")
            elif LAYERS[dst] >= LAYERS[src]:
                kind = "sideways" if LAYERS[dst] == LAYERS[src] else "upward"
                problems.append(f"{rel}:{line}: {kind} import {src} -> {name}")
    return problems


def test_imports_point_one_way() -> None:
    problems = violations()
    assert not problems, "\n".join(problems)


def test_the_checker_catches_an_upward_and_a_sideways_import(tmp_path: Path) -> None:
    fake = tmp_path / "proteinflow"
    for area, text in {
        "flow": "from proteinflow.train.run import train_experiment\n",
        "models": "def f():\n    import proteinflow.protein.metrics\n",
        "train": "from proteinflow.flow.paths import AffinePath\n",
    }.items():
        (fake / area).mkdir(parents=True)
        (fake / area / "m.py").write_text(text)
    found = violations(fake)
    assert len(found) == 2
    assert any("upward import flow -> proteinflow.train.run" in p for p in found)
    assert any("sideways import models -> proteinflow.protein.metrics" in p for p in found)


@pytest.mark.parametrize("area", sorted(LAYERS))
def test_every_layer_exists(area: str) -> None:
    assert (PACKAGE / area).is_dir() or (PACKAGE / f"{area}.py").is_file()
