"""Typed configs loaded from TOML.

A run config is one TOML file with one table per section (``[run]``, ``[model]``,
``[dataset]``, ``[extract]``, ``[sae]``, ...). Each stage asks for the dataclass of
its own section with :meth:`RunConfig.section` (see ``precompute/configs.py``), so
loading the file never depends on every stage's schema. Unknown keys in a *config* are an
error (a typo must not silently fall back to a default); unknown keys in a saved
*artifact* are ignored (see :func:`from_dict`), so old artifacts stay readable.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

from ard_core.durable import write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project requires 3.10+, tomli is its backport
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or section is invalid; the message names the key and the fix."""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert TOML values to the annotated type where that is unambiguous."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):  # a nested table
        return from_dict(hint, value, where=where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Union and type(None) in args and value is not None:
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, strict: bool = True, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``.

    strict=True (configs) rejects unknown keys; strict=False (saved artifacts)
    ignores them so that files written by newer versions still load.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    label = where or cls.__name__
    if unknown and strict:
        raise ConfigError(
            f"[{label}] has unknown key(s) {unknown}; valid keys are {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{label}.{k}") for k, v in data.items() if k in names}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required keys
        raise ConfigError(f"[{label}] {exc}") from exc


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> JSON/TOML-friendly dict (Paths become strings, tuples lists)."""

    def conv(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in dataclasses.asdict(obj).items()}


def save_json(obj: Any, path: Path) -> None:
    """Write a dataclass as pretty JSON (the ``cfg.json`` next to an artifact), atomically."""
    write_text(path, json.dumps(to_dict(obj), indent=2, sort_keys=True) + "\n")


def load_json(cls: type[T], path: Path) -> T:
    """Read a dataclass saved by :func:`save_json`, ignoring unknown keys."""
    return from_dict(cls, json.loads(Path(path).read_text()), strict=False, where=str(path))


@dataclass
class RunSection:
    """The ``[run]`` table shared by every stage."""

    name: str = "demo"
    """Short name of the run; used in SAE ids and the app's title."""
    out_dir: Path = Path("runs/demo")
    """Directory that receives every artifact of the run (activations, SAEs, catalog)."""
    seed: int = 0
    """Seed for every random choice in the pipeline (shuffles, inits, tie-breaks)."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    threads: int | None = None
    """CPU threads for torch (None = torch's default). Small models on a shared CPU run far
    faster with 1: with 2 threads and another busy process, OpenMP threads spin against each other."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.threads is not None and self.threads < 1:
            raise ConfigError("[run].threads must be >= 1 (or left out for torch's default)")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"[run].name {self.name!r} must be non-empty without '/', '\\' or spaces")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"[run].device {self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")

    @property
    def catalog_path(self) -> Path:
        return self.out_dir / "catalog.duckdb"


# A --set value that is not valid TOML is taken as a plain string when it looks like one
# (runs/scratch, stream, http://host:8000/v1); anything else is a typo worth reporting.
_BARE_STRING = re.compile(r"^[^\s\"'\[\]{}=,#]*$")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'section.key=value'`` -> (['section', 'key'], value); the value in TOML syntax."""
    key, sep, text = item.partition("=")
    path = [k.strip() for k in key.split(".")]
    if not sep or len(path) < 2 or not all(path):
        raise ConfigError(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. --set sae.steps=10 "
                          "or --set run.out_dir='\"runs/scratch\"'")
    try:
        return path, tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if _BARE_STRING.match(text.strip()):
            return path, text.strip()
        raise ConfigError(f"--set {item!r}: the value is not TOML ({exc}); quote strings, "
                          "write lists as [1, 2] and tables as {{ a = 1 }}") from exc


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with every ``--set SECTION.KEY=VALUE`` applied, in order.

    The section must be a table of the file (a typo must not add a table nobody reads); deeper
    tables are created as needed. Arrays of tables are replaced whole, never indexed.
    """
    out = _deep_copy(raw)
    for item in overrides:
        path, value = parse_override(item)
        if path[0] not in out:
            raise ConfigError(f"--set {item!r}: the config has no [{path[0]}] table "
                              f"(it has {sorted(k for k, v in out.items() if isinstance(v, dict))})")
        table = out
        for depth, key in enumerate(path[:-1]):
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"--set {item!r}: {where} is not a table; set it whole, e.g. "
                                  f"--set '{where}=[...]'")
        table[path[-1]] = value
    return out


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


@dataclass
class RunConfig:
    """A parsed run config: the common ``[run]`` table plus the raw other tables."""

    run: RunSection
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    overrides: tuple[str, ...] = ()
    """The ``--set SECTION.KEY=VALUE`` items applied to the file's tables (already in ``raw``)."""

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> "RunConfig":
        """Read the TOML file at ``path`` and apply ``overrides`` (``--set``) before any section is typed."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
        return cls.from_raw(apply_overrides(raw, overrides), path=path, overrides=tuple(overrides))

    @classmethod
    def from_raw(cls, raw: dict[str, Any], path: Path | None = None, overrides: tuple[str, ...] = ()) -> "RunConfig":
        run = from_dict(RunSection, dict(raw.get("run", {})), where="run")
        return cls(run=run, raw=raw, path=path, overrides=overrides)

    def section(self, name: str, cls: type[T]) -> T:
        """Typed view of table ``[name]``; missing table -> all defaults."""
        data = self.raw.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"[{name}] must be a table, got {type(data).__name__}")
        return from_dict(cls, dict(data), where=name)

    def has(self, name: str) -> bool:
        return name in self.raw


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when the config asks for one."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
