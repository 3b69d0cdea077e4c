"""Where things may live: SQL and DuckDB only in the catalog package, gradio only in the UI package,
the asset factory (forge) out of everything that runs, and every module and function small.

Read from the source (ast), so a stray import or query string fails here before review.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = [*sorted((REPO / "ard_core").rglob("*.py")), *sorted((REPO / "precompute").rglob("*.py")), REPO / "app.py"]
"""What runs when a user runs the pipeline or the app."""
PROJECT = [*LIBRARY, *sorted((REPO / "forge").rglob("*.py"))]


def _imports(path: Path) -> set[str]:
    """Top-level package names ``path`` imports, at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_only_the_catalog_package_imports_duckdb() -> None:
    catalog = REPO / "ard_core" / "catalog"
    offenders = [_rel(p) for p in LIBRARY if "duckdb" in _imports(p) and catalog not in p.parents]
    assert offenders == []


def test_only_the_ui_package_imports_gradio() -> None:
    ui = REPO / "ard_core" / "ui"
    offenders = [_rel(p) for p in LIBRARY if "gradio" in _imports(p) and ui not in p.parents]
    assert offenders == []


def test_the_ui_runs_no_sql() -> None:
    """Every question a page asks is a named Catalog read (ard_core/catalog/browse.py, results.py)."""
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE)\b.*\b(FROM|WHERE|INTO|SET|BY)\b|\.query\(|\.execute\(")
    offenders = []
    for path in sorted((REPO / "ard_core" / "ui").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and sql.search(node.value):
                offenders.append(f"{_rel(path)}:{node.lineno}: {node.value[:60]!r}")
        offenders += [f"{_rel(path)}: calls .query/.execute" for line in path.read_text().splitlines()
                      if re.search(r"\.(query|execute)\(", line)]
    assert offenders == []


def test_nothing_that_runs_imports_the_asset_factory() -> None:
    offenders = [_rel(p) for p in LIBRARY if "forge" in _imports(p)]
    assert offenders == []


def test_modules_and_functions_stay_small() -> None:
    """No module over 400 lines and no function over 60 (STYLE.md; the training loops fit too)."""
    too_long = []
    for path in PROJECT:
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_long.append(f"{_rel(path)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{_rel(path)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []
