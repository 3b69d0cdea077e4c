"""Files that survive a kill, and the test hook that kills.

Every file the pipeline writes goes through :func:`atomic_path` (or its
:func:`write_text` / :func:`write_bytes` shorthands): the content is written to
``NAME.tmp`` beside the target, flushed to disk, and renamed over ``NAME``. A
rename is atomic, so a reader sees the old file, no file, or the whole new one,
never a prefix; a process killed mid-write leaves at most ``NAME.tmp``, which no
reader looks at and the next write of ``NAME`` replaces.

The fsyncs make "renamed" mean "on disk" (the done markers of ``precompute run``
vouch for files written before them, and must not outlive them in a power loss).

Test hook: ``ARD_CRASH_AT=STAGE:POINT[@N]`` makes ``python -m precompute run``
SIGKILL itself the N-th time (default 1) stage STAGE reaches POINT, as if killed
from outside at that instant (no ``finally``, no ``atexit``; only stdout and its own
message are flushed, for the log). The points:

- ``start``: before the stage runs; ``marker``: after it returned, before its done marker;
- ``write:NAME``: a file named NAME is complete as ``NAME.tmp`` but not yet renamed;
- ``commit``: a catalog transaction has run all its statements but not committed;
- ``shard`` (extract): an activation shard was committed;
- ``checkpoint`` (train-sae): a training checkpoint was saved.

e.g. ``ARD_CRASH_AT=train-sae:checkpoint@4``. ``tests/test_crash_safety.py`` uses it.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CRASH_ENV = "ARD_CRASH_AT"
TMP_SUFFIX = ".tmp"

_stage = ""
_hits: dict[str, int] = {}


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields the temporary path to write; on success it is synced and renamed to ``path``.

    Writers that pick a format from the file name (matplotlib, np.save) must be told
    the format: the temporary name ends in ``.tmp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        yield tmp
        fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    crash_point(f"write:{path.name}")
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the test hook ---------------------------------------------------------------------------
@contextmanager
def stage(name: str) -> Iterator[None]:
    """Names the running pipeline stage for :func:`crash_point` (``precompute run`` sets it)."""
    global _stage
    saved, _stage = _stage, name
    try:
        yield
    finally:
        _stage = saved


def crash_point(point: str) -> None:
    """SIGKILL this process here when ``ARD_CRASH_AT`` names the current stage and ``point``."""
    spec = os.environ.get(CRASH_ENV)
    if not spec or not _stage:
        return
    target, _, nth = spec.partition("@")
    here = f"{_stage}:{point}"
    if target != here:
        return
    _hits[here] = _hits.get(here, 0) + 1
    if _hits[here] == int(nth or 1):
        print(f"[crash] {CRASH_ENV}={spec}: SIGKILL", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
