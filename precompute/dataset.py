"""``python -m precompute dataset``: the probing dataset of a run.

kind = "mini" (the embedded default): the corpus committed under
``[dataset].corpus_dir`` is verified against its own ``build.json`` (manifest
hash, every file's rate/channels/duration; :mod:`ard_core.datasets.corpus`)
and its manifest is copied into the run directory; nothing is synthesized, so
no root or espeak-ng is needed. Building the corpus is the asset factory's job
(``python -m forge corpus``; see assets/corpus/DATA.md).

kind = "sources": the real datasets listed as ``[[dataset.sources]]`` tables
(``loader = "wavcaps" | "iemocap" | "fsd50k" | "sakura" | "audiobench" |
"folder" | "manifest"`` plus that loader's arguments) are loaded and merged
into one manifest in the run directory. Any source may set ``id_prefix``, which is put
before its clip ids (clip ids must be unique across sources). Audio that a source
embeds in its metadata (AudioBench's parquet files) is written under
``<out_dir>/dataset/audio/``.

Either way the stage writes ``<out_dir>/dataset/manifest.csv`` and
``<out_dir>/dataset/summary.json`` (clips per track, label and split).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ard_core.config import ConfigError, RunConfig, save_json
from ard_core.datasets import TRACKS, ClipRecord, manifest_hash, save_manifest
from ard_core.datasets.corpus import CorpusMismatch, verify_corpus
from ard_core.datasets.loaders import LOADERS
from ard_core.durable import write_text
from precompute.cli import add_config_argument, load_config

log = logging.getLogger(__name__)


@dataclass
class DatasetConfig:
    """The ``[dataset]`` table."""

    kind: str = "mini"
    """'mini' (the embedded corpus) or 'sources' (real datasets listed in [[dataset.sources]])."""
    corpus_dir: Path = Path("assets/corpus")
    """Folder of the mini corpus built by ``python -m forge corpus`` (manifest.csv, build.json, clips/)."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """For kind='sources': tables with 'loader' and that loader's keyword arguments."""

    def __post_init__(self) -> None:
        self.corpus_dir = Path(self.corpus_dir)
        if self.kind not in ("mini", "sources"):
            raise ConfigError(f"[dataset].kind {self.kind!r}: use 'mini' or 'sources'")
        if self.kind == "sources" and not self.sources:
            raise ConfigError("[dataset].kind = 'sources' needs at least one [[dataset.sources]] table")
        for i, src in enumerate(self.sources):
            where = f"[[dataset.sources]] #{i + 1}"
            name = src.get("loader")
            if name not in LOADERS:
                raise ConfigError(f"{where}: loader {name!r}; use one of {sorted(LOADERS)}")
            prefix = src.get("id_prefix", "x")
            if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "/\\ ,"):
                raise ConfigError(f"{where}: id_prefix {prefix!r} must be a non-empty name without '/', spaces "
                                  "or commas")
            try:
                inspect.signature(LOADERS[name]).bind(**loader_kwargs(src))
            except TypeError as exc:
                params = list(inspect.signature(LOADERS[name]).parameters)
                raise ConfigError(f"{where} ({name}): {exc}; its arguments are {params}") from exc


def loader_kwargs(src: dict[str, Any]) -> dict[str, Any]:
    """A source table's arguments for its loader (what the stage itself reads taken out)."""
    return {k: v for k, v in src.items() if k not in ("loader", "id_prefix")}


def load_sources(sources: list[dict[str, Any]], audio_dir: Path | None = None) -> list[ClipRecord]:
    """Load and concatenate every [[dataset.sources]] entry; clip ids must stay unique.

    ``audio_dir`` receives the audio of loaders that take ``extract_to`` (one folder per source)."""
    records: list[ClipRecord] = []
    origin: dict[str, int] = {}
    for i, src in enumerate(sources, start=1):
        kwargs = loader_kwargs(src)
        loader = LOADERS[src["loader"]]
        if "extract_to" in inspect.signature(loader).parameters and "extract_to" not in kwargs and audio_dir:
            kwargs["extract_to"] = audio_dir / f"source{i}-{src['loader']}"
        got = loader(**kwargs)
        if src.get("id_prefix"):
            got = [replace(r, clip_id=f"{src['id_prefix']}-{r.clip_id}") for r in got]
        log.info("%s: %d clips", src["loader"], len(got))
        for r in got:
            if r.clip_id in origin:
                first = origin[r.clip_id]
                raise ConfigError(
                    f"[[dataset.sources]] #{first} and #{i} ({src['loader']}) both give clip id {r.clip_id!r}; "
                    f"add id_prefix = \"NAME\" to source #{i} (its ids become NAME-<id>), or drop the overlap")
            origin[r.clip_id] = i
        records += got
    return records


def summarize(records: list[ClipRecord]) -> dict[str, Any]:
    """Counts per split, and per track -> label -> split."""
    tracks: dict[str, dict[str, dict[str, int]]] = {}
    for rec in records:
        for track in TRACKS:
            for label in rec.label_set(track):
                tracks.setdefault(track, {}).setdefault(label, Counter())[rec.split] += 1
    return {
        "n_clips": len(records),
        "splits": dict(sorted(Counter(r.split for r in records).items())),
        "total_duration_s": round(sum(r.duration_s for r in records), 1),
        "max_duration_s": max((r.duration_s for r in records), default=0.0),
        "tracks": {t: {lab: dict(sorted(c.items())) for lab, c in sorted(labs.items())}
                   for t, labs in tracks.items()},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--decode", action="store_true",
                        help="when verifying, decode every clip fully instead of reading headers")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    dcfg = cfg.section("dataset", DatasetConfig)
    out = cfg.run.out_dir / "dataset"
    if dcfg.kind == "mini":
        try:
            records = verify_corpus(dcfg.corpus_dir, decode=args.decode)
        except CorpusMismatch as exc:
            log.error("%s", exc)
            return 1
        log.info("verified %d clips of the corpus in %s", len(records), dcfg.corpus_dir)
    else:
        records = load_sources(dcfg.sources, out / "audio")
    manifest = save_manifest(records, out / "manifest.csv")
    summary = summarize(records) | {"manifest_sha256": manifest_hash(records, out)}
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    save_json(dcfg, out / "cfg.json")
    log.info("dataset: %d clips %s -> %s", len(records), summary["splits"], manifest)
    return 0
