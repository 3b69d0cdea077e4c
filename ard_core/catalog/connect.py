"""The one place that opens DuckDB files: the catalog and the annotations file beside it.

Both open through :func:`connect`, so a locked or unreadable file gives the same kind
of error (:class:`CatalogError`, naming the file and the likely cause) wherever it is
opened, and no other module imports ``duckdb.connect``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb


class CatalogError(RuntimeError):
    """The catalog file is missing, locked, or of an unsupported schema version."""


def connect(path: str | Path, *, read_only: bool, what: str, busy_hint: str) -> duckdb.DuckDBPyConnection:
    """A connection to the DuckDB file ``path``; ``what`` names it and ``busy_hint`` says why it may be locked.

    A writable file's folder is created first. A file another process holds raises
    :class:`CatalogError` rather than DuckDB's IOException.
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise CatalogError(f"cannot open {what} {str(path)!r}: {exc} ({busy_hint})") from exc
