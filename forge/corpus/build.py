"""``python -m forge corpus``: render the mini corpus into ``assets/corpus``.

The plan (which clips, which split, how each is rendered) is
:mod:`forge.corpus.plan`; this module renders it, writes ``manifest.csv`` and
``build.json`` (settings, clip count, manifest hash, espeak-ng version), and
checks the result the way the pipeline will (:func:`ard_core.datasets.corpus.verify_corpus`).
Needs Debian's ``espeak-ng`` for the speech clips; see assets/corpus/DATA.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from ard_core.audio import SAMPLE_RATE, save_audio
from ard_core.config import RunConfig, from_dict, to_dict
from ard_core.datasets.corpus import BUILD_FILE, read_build_info, verify_corpus
from ard_core.datasets.manifest import ClipRecord, manifest_hash, save_manifest
from forge.config import add_config_argument
from forge.corpus import speech
from forge.corpus.config import DATASET_NAME, CorpusConfig, MiniCorpusConfig
from forge.corpus.plan import clip_rng, plan_corpus

log = logging.getLogger(__name__)


def build_info(cfg: MiniCorpusConfig) -> dict:
    """What build.json records about the settings (read back by :func:`corpus_config_from_info`)."""
    return {"dataset": DATASET_NAME, "config": to_dict(cfg)}


def build_corpus(cfg: MiniCorpusConfig, out_dir: str | Path, sources: str | Path) -> list[ClipRecord]:
    """Render every clip into ``out_dir/clips``, write ``manifest.csv`` and ``build.json``.

    ``sources`` holds the real recordings (``animals/*.mp3``, ``sfx/*.wav``).
    Needs espeak-ng when the speech group is built. The old ``clips`` folder is
    removed first, so no stale file survives a rebuild.
    """
    out_dir, sources = Path(out_dir), Path(sources)
    talks = ("speech" in cfg.groups and cfg.speech_per_cell) or ("composite" in cfg.groups
                                                               and cfg.speech_event_per_class)
    if talks and not speech.espeak_available():
        raise speech.SpeechSynthError(
            "espeak-ng is not installed; the speech clips need it (Debian/Ubuntu: "
            "sudo apt-get install espeak-ng), or build only groups = ['animal', 'sound_event']")
    t0 = time.perf_counter()
    plans = plan_corpus(cfg, sources)
    # Render into a staging folder and swap it in at the end, so a failed or
    # interrupted build never leaves a half-written corpus (readers keep the old one).
    clips_dir, staging = out_dir / "clips", out_dir / "clips.partial"
    if staging.exists():
        shutil.rmtree(staging)
    records = []
    for k, plan in enumerate(plans):
        out = plan.render(clip_rng(cfg.seed, plan.clip_id))
        rel = Path(plan.group) / f"{plan.clip_id}.{cfg.audio_format}"
        save_audio(staging / rel, out.audio, compression_level=cfg.compression_level)
        records.append(ClipRecord(plan.clip_id, clips_dir / rel, DATASET_NAME, plan.split,
                                  round(len(out.audio) / SAMPLE_RATE, 3), plan.labels, out.caption, out.meta,
                                  out.spans))
        if (k + 1) % 200 == 0:
            log.info("built %d/%d clips (%.0f s)", k + 1, len(plans), time.perf_counter() - t0)
    if clips_dir.exists():
        shutil.rmtree(clips_dir)
    staging.rename(clips_dir)
    manifest = save_manifest(records, out_dir / "manifest.csv")
    info = build_info(cfg) | {
        "espeak_ng": speech.espeak_version() if talks else "not used",
        "n_clips": len(records),
        "manifest_sha256": manifest_hash(records, out_dir),
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    (out_dir / BUILD_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log.info("mini corpus: %d clips in %.0f s -> %s", len(records), info["build_seconds"], manifest)
    return records


def corpus_config_from_info(corpus_dir: str | Path) -> MiniCorpusConfig:
    """The settings a built corpus was made with (from its build.json)."""
    info = read_build_info(corpus_dir)
    return from_dict(MiniCorpusConfig, info["config"], strict=False, where="build.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def main(args: argparse.Namespace) -> int:
    cfg = RunConfig.load(args.config).section("corpus", CorpusConfig)
    records = build_corpus(cfg.build, cfg.out_dir, cfg.sources_dir)
    verify_corpus(cfg.out_dir)  # what every pipeline run will check, checked once here
    print(f"built {len(records)} clips into {cfg.out_dir} (manifest, {BUILD_FILE}); verified")
    return 0
