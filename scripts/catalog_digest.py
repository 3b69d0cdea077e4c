"""Print a content hash of every table of a catalog (rows sorted), to compare two runs.

    python scripts/catalog_digest.py runs/demo/catalog.duckdb [--json OUT]
    python scripts/catalog_digest.py A.json B.json          # compare two saved digests

Reads DuckDB directly (not through ``ard_core.catalog``) so that it gives the same answer
for catalogs written before and after a change to the catalog code. Row order is not part
of a table's content, so rows are sorted by their text before hashing; floats are printed
with repr, so a single ulp of difference shows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def digest(db: Path) -> dict[str, dict[str, object]]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1").fetchall()]
        out: dict[str, dict[str, object]] = {}
        for t in tables:
            rows = sorted(repr(r) for r in con.execute(f'SELECT * FROM "{t}"').fetchall())
            out[t] = {"rows": len(rows), "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()}
        return out
    finally:
        con.close()


def compare(a: dict, b: dict) -> int:
    bad = 0
    for t in sorted(set(a) | set(b)):
        if a.get(t) != b.get(t):
            bad += 1
            print(f"DIFFERS {t}: {a.get(t)} vs {b.get(t)}")
        else:
            print(f"same    {t}: {a[t]['rows']} rows")
    print(f"{bad} table(s) differ" if bad else "all tables equal")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="a catalog .duckdb, or two saved digest .json files")
    p.add_argument("--json", type=Path, help="save the digest here")
    args = p.parse_args()
    if len(args.paths) == 2 and all(x.suffix == ".json" for x in args.paths):
        return compare(*(json.loads(x.read_text()) for x in args.paths))
    d = digest(args.paths[0])
    for t, v in d.items():
        print(f"{t:28s} {v['rows']:>9} {v['sha256'][:16]}")
    if args.json:
        args.json.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
