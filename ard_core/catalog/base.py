"""The catalog connection: opening, migrations, transactions, typed writes and generic reads.

Writers (pipeline stages) open it with ``Catalog.open(path)``; readers (the app)
with ``Catalog.open(path, read_only=True)``. The named reads the app uses live on
:class:`ard_core.catalog.Catalog`, built on this class (:mod:`.browse`, :mod:`.results`).

A read-only catalog may be shared by threads (the app's request handlers): each of
its reads runs on its own cursor, because one DuckDB connection must not be used by
two threads at once. A writable one runs everything on its connection, so reads
inside a :meth:`CatalogBase.transaction` see its uncommitted writes.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, TypeVar

import duckdb
import pyarrow as pa

from ard_core.catalog.connect import CatalogError, connect
from ard_core.catalog.rows import PRIMARY_KEY, TABLE_OF, SaeRow
from ard_core.catalog.schema import FILL_FEATURE_PAGES, MIGRATIONS, PAGE_SOURCES, SCHEMA_VERSION, SCHEMA_VERSION_KEY
from ard_core.durable import crash_point

C = TypeVar("C", bound="CatalogBase")


class CatalogBase:
    """A connection to the catalog. Use as a context manager or call :meth:`close`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.read_only = read_only
        self._in_transaction = False

    # -- opening and migrations -----------------------------------------------------
    @classmethod
    def open(cls: type[C], path: str | Path, read_only: bool = False) -> C:
        path = Path(path)
        if read_only and not path.is_file():
            raise CatalogError(f"catalog {str(path)!r} does not exist; run `python -m precompute run --config ...` first")
        con = connect(path, read_only=read_only, what="catalog", busy_hint="is another process writing it?")
        cat = cls(con, path, read_only)
        if read_only:
            cat._check_version()
        else:
            cat.migrate()
        return cat

    def _check_version(self) -> None:
        """A reader cannot migrate: it refuses any version but its own, saying what to do."""
        version, path = self.schema_version(), self.path
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {str(path)!r} has schema v{version}, newer than this code (v{SCHEMA_VERSION}); upgrade"
            )
        if version < SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {str(path)!r} has schema v{version}, this code needs v{SCHEMA_VERSION}; migrate it "
                f"by re-running any precompute stage on it, or with `python -c \"from ard_core.catalog import "
                f"Catalog; Catalog.open('{path}').close()\"`"
            )

    def schema_version(self) -> int:
        has_meta = self._fetch("SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'")[1][0][0]
        if not has_meta:
            return 0
        rows = self._fetch("SELECT value FROM meta WHERE key = ?", [SCHEMA_VERSION_KEY])[1]
        return int(rows[0][0]) if rows else 0

    def migrate(self) -> int:
        """Apply missing migrations; returns the resulting schema version."""
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise CatalogError(f"catalog {str(self.path)!r} has schema v{version}, newer than this code (v{SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return version
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            for step in MIGRATIONS[version:]:
                self.con.execute(step)
            self.con.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", [SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)]
            )
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        return SCHEMA_VERSION

    def close(self) -> None:
        self.con.close()

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.read_only:
            raise CatalogError(f"catalog {str(self.path)!r} is open read-only")

    def upsert(self, rows: Sequence[Any]) -> int:
        """Insert or replace typed rows (all of one dataclass type) in one statement."""
        self._require_writable()
        if not rows:
            return 0
        kind = type(rows[0])
        names = [f.name for f in dataclasses.fields(kind)]
        columns: dict[str, list] = {n: [] for n in names}
        for row in rows:
            if type(row) is not kind:
                raise TypeError(f"mixed row types in one upsert: {kind.__name__} and {type(row).__name__}")
            for n in names:
                v = getattr(row, n)
                columns[n].append(json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
        return self.upsert_columns(kind, columns)

    def upsert_columns(self, kind: type, columns: Mapping[str, Any]) -> int:
        """Insert or replace rows of ``kind``'s table given column-wise: the bulk path.

        ``columns`` maps every field of the dataclass ``kind`` to a list, NumPy array
        or Arrow array, all of one length; no row objects are built, so hundreds of
        thousands of rows take about a second. Dict-valued fields must already be JSON.
        """
        self._require_writable()
        table = TABLE_OF[kind]
        names = [f.name for f in dataclasses.fields(kind)]
        if set(columns) != set(names):
            missing, extra = sorted(set(names) - set(columns)), sorted(set(columns) - set(names))
            raise ValueError(f"upsert_columns({kind.__name__}): columns must be exactly its fields; "
                             f"missing {missing}, unknown {extra}")
        arrow = pa.table({n: columns[n] for n in names})  # noqa: F841  (DuckDB reads the local by name)
        if arrow.num_rows == 0:
            return 0
        cols = ", ".join(f'"{n}"' for n in names)
        with self._atomic():
            self.con.execute(f"INSERT OR REPLACE INTO {table} ({cols}) SELECT {cols} FROM arrow")
            if table in PAGE_SOURCES:
                self._refresh_pages(sorted(set(arrow.column("sae_id").to_pylist())))
        return arrow.num_rows

    def delete_where(self, table: str, **equals: Any) -> None:
        """Delete rows of ``table`` matching all ``column=value`` pairs (stage re-runs)."""
        self._require_writable()
        if table not in TABLE_OF.values():
            raise ValueError(f"unknown table {table!r}")
        where = " AND ".join(f'"{k}" = ?' for k in equals) or "TRUE"
        with self._atomic():
            self.con.execute(f"DELETE FROM {table} WHERE {where}", list(equals.values()))
            if table in PAGE_SOURCES:
                self._refresh_pages([equals["sae_id"]] if "sae_id" in equals else None)

    def _refresh_pages(self, sae_ids: list[str] | None) -> None:
        """Rebuild the ``feature_pages`` rows of ``sae_ids`` (None: every SAE) from their sources."""
        if sae_ids is None:
            self.con.execute("DELETE FROM feature_pages")
            self.con.execute(FILL_FEATURE_PAGES.format(ex="TRUE", f="TRUE"))
        else:
            self.con.execute("DELETE FROM feature_pages WHERE sae_id = ANY(?)", [sae_ids])
            fill = FILL_FEATURE_PAGES.format(ex="sae_id = ANY(?)", f="f.sae_id = ANY(?)")
            self.con.execute(fill, [sae_ids, sae_ids])

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """One transaction around what runs inside, or the caller's if one is open (then it commits)."""
        if self._in_transaction:
            yield
            return
        self.con.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")
        finally:
            self._in_transaction = False

    @contextmanager
    def transaction(self: C) -> Iterator[C]:
        """Writes inside commit together or not at all.

        A stage replaces its rows as DELETE + INSERT inside one of these, so a run killed
        in between leaves the old rows (DuckDB drops an uncommitted transaction on reopen),
        never a half-empty table or partial rows.
        """
        self._require_writable()
        with self._atomic():
            yield self
            crash_point("commit")

    def upsert_sae(self, row: SaeRow) -> None:
        self.upsert([row])

    # -- reading -----------------------------------------------------------------------
    def _fetch(self, sql: str, params: Iterable[Any] = ()) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of ``sql``; on a fresh cursor when read-only (see the module docstring)."""
        con = self.con.cursor() if self.read_only else self.con
        try:
            cur = con.execute(sql, list(params))
            return [d[0] for d in cur.description], cur.fetchall()
        finally:
            if con is not self.con:
                con.close()

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        names, rows = self._fetch(sql, params)
        return [dict(zip(names, r)) for r in rows]

    def rows(self, kind: type, where: str = "", params: Iterable[Any] = (), order_by: str = "") -> list[Any]:
        """Typed rows of the table behind ``kind``."""
        table = TABLE_OF[kind]
        names = [f.name for f in dataclasses.fields(kind)]
        sql = f"SELECT {', '.join(repr_col(n) for n in names)} FROM {table}"
        if where:
            sql += f" WHERE {where}"
        sql += " ORDER BY " + (order_by or ", ".join(repr_col(c) for c in PRIMARY_KEY[table]))
        out = []
        for rec in self.query(sql, params):
            if "labels" in rec and isinstance(rec["labels"], str):
                rec["labels"] = json.loads(rec["labels"])
            out.append(kind(**rec))
        return out

    def count(self, table: str) -> int:
        if table not in TABLE_OF.values():
            raise ValueError(f"unknown table {table!r}")
        return int(self._fetch(f"SELECT count(*) FROM {table}")[1][0][0])

    def tables(self) -> list[str]:
        return sorted(r[0] for r in self._fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        )[1])

    def export_parquet(self, folder: str | Path) -> list[Path]:
        """Every table (and view) of the catalog as ``folder/TABLE.parquet``, one file each, by its key order."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = sorted(r[0] for r in self._fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")[1])
        out = []
        for name in names:
            key = PRIMARY_KEY.get(name)
            order = f" ORDER BY {', '.join(repr_col(c) for c in key)}" if key else ""
            path = folder / f"{name}.parquet"
            con = self.con.cursor() if self.read_only else self.con
            try:
                con.execute(f'COPY (SELECT * FROM "{name}"{order}) TO \'{_sql_path(path)}\' (FORMAT parquet)')
            finally:
                if con is not self.con:
                    con.close()
            out.append(path)
        return out

    def resolve(self, path: str | Path | None) -> Path | None:
        """The existing file or folder a catalog path names: absolute, or relative to the cwd or to the
        folders above the catalog (a run's paths are written relative to where it was run)."""
        if not path:
            return None
        p = Path(path)
        if p.is_absolute():
            return p if p.exists() else None
        base = self.path.resolve().parent
        for root in (Path.cwd(), base, *base.parents):
            if (root / p).exists():
                return root / p
        return None

    def private_paths(self, *others: Path) -> list[str]:
        """What a web server must never serve, even inside a clip folder: this catalog file and ``others``
        (the annotations file), each with its DuckDB WAL, and the activation store beside the catalog."""
        files = [self.path.resolve(), *(Path(p).resolve() for p in others)]
        out = [*files, self.path.resolve().parent / "activations"]
        out += [p.with_name(p.name + ".wal") for p in files]
        return [str(p) for p in out]


def repr_col(name: str) -> str:
    return f'"{name}"'


def _sql_path(path: Path) -> str:
    """A file path as the inside of a SQL string literal."""
    return str(path.resolve()).replace("'", "''")
