"""Stage ``steerability``: which features steer each track's answer to each target, at what value.

For every track with a P3 question whose labels the clips carry (gender, emotion, language,
animal, sound_event) and each of its labels as the target, candidates come from EVERY SAE
(all layers and expansions): ``named_per_sae`` named features whose name matches the target
and ``contrast_per_sae`` features of highest probe contrast (:mod:`ard_core.steerability`).
Each is set, at the audio and prompt positions, to the values of ``multiples`` x the layer's
median token norm; its flip rate is the share of probe clips whose unsteered answer is not
the target that the steered model answers with the target. The catalog's ``steerability``
table keeps each candidate's best value, flip rate and n; its view ``feature_steerability``
the best row per feature (what the app shows).

What keeps it to about a minute on the demo (2 CPU cores):

- answers are next-token label probabilities after the P3 prefix, one batched forward per
  ``batch_rows`` steered variants, no generation (:class:`ard_core.steer_batch.ClipPool`);
- each track's ``pool_clips`` clips are prepared and answered unsteered once, and a steered
  forward starts at the steered layer from their cached hidden state;
- the change a steered feature makes at its layer is computed from that layer's cached output
  and the SAE's cached top-(K+1) pre-activations, so no token is encoded again;
- few candidates (by default one named and one by contrast per SAE and target), three
  values, and at most ``clips_per_target`` clips per target, of which every candidate and
  value first sees ``screen_clips`` and only the ``finalists`` best see the rest (the other
  candidates keep their screen result, with its smaller n).

On the demo that is 38 targets x about 18 candidates x 3 values x 3 screen clips, then 2
finalists x 3 values x 13 more clips: about 8,000 steered variants. The stage prints how
many it judged and its time (wall and CPU), and ``OUT_DIR/steerability/README.md`` lists the
best feature per track and target.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ard_core.audio import load_audio
from ard_core.catalog import Catalog, ClipRow, SaeRow, SteerabilityRow, parse_feature_ref
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.durable import write_text
from ard_core.evaluation import EmbedFn, cosine_matrix, references
from ard_core.models import AudioLLM, ModelConfig
from ard_core.prompts import TRACK_PROMPTS, label_token_ids
from ard_core.sae import TopKSAE
from ard_core.steer_batch import ClipPool
from ard_core.steerability import (
    Candidate,
    SweepResult,
    clip_scores,
    contrast,
    judge_prompt,
    merge,
    named_candidates,
    probe_pool,
    sweep,
    target_words,
    top_contrast,
    values_for,
)
from ard_core.store import ActivationStore
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import EvaluateConfig, ScoreConfig, SteerabilityConfig

log = logging.getLogger(__name__)


@dataclass
class Named:
    """One SAE's named features and their names' text embeddings."""

    features: list[int]
    names: list[str]
    emb: np.ndarray


@dataclass
class Scene:
    """What every track's measurement reads: the probe clips' scores, the SAEs, the names."""

    saes: list[SaeRow]
    models: dict[str, TopKSAE]
    probe: list[ClipRow]
    """Probe clips with a label on some measured track (the rows of ``scores``)."""
    scores: dict[str, np.ndarray]
    """sae_id -> (probe clips, d_sae) r = mu x c."""
    norms: dict[int, float]
    """layer -> median token norm."""
    named: dict[str, Named]
    refs: dict[str, dict[str, str]]
    """track -> label -> reference phrase."""
    embed: EmbedFn
    present: dict[str, list[str]] = field(default_factory=dict)
    """track -> labels the catalog's clips carry."""


def measured_tracks(clips: Sequence[ClipRow], cfg: SteerabilityConfig) -> dict[str, list[str]]:
    """track -> its labels, for the tracks measured (``cfg.tracks`` or every P3 track the clips carry)."""
    present: dict[str, set[str]] = {}
    for c in clips:
        for t, l in c.labels.items():
            if l and t in TRACK_PROMPTS:
                present.setdefault(t, set()).add(l)
    wanted = cfg.tracks if cfg.tracks is not None else sorted(present)
    missing = [t for t in wanted if len(present.get(t, ())) < 2]
    if missing:
        raise ConfigError(f"[steerability].tracks {missing}: the clips carry fewer than two labels for them; "
                          f"tracks with labels: {sorted(t for t, v in present.items() if len(v) > 1)}")
    return {t: sorted(present[t]) for t in wanted}


def build_scene(cat: Catalog, store: ActivationStore, run: RunConfig, cfg: SteerabilityConfig, embed: EmbedFn,
                device: str) -> Scene:
    saes = cat.saes(controls=False)  # the random controls are for naming and probing
    if not saes:
        raise ConfigError("no SAEs in the catalog; run train-sae, score and describe first")
    clips = cat.rows(ClipRow)
    present = measured_tracks(clips, cfg)
    probe = [c for c in clips if c.split == cfg.split and any(c.labels.get(t) for t in present)]
    if not probe:
        raise ConfigError(f"no {cfg.split!r} clip carries a label of {sorted(present)}; set [steerability].split")
    models = {s.sae_id: TopKSAE.load(cat.resolve(s.path) or s.path, device=device).eval() for s in saes}
    scores, norms = {}, {}
    for layer in sorted({s.layer for s in saes}):
        at = {s.sae_id: models[s.sae_id] for s in saes if s.layer == layer}
        by_sae, _, norms[layer] = clip_scores(store, layer, [c.clip_id for c in probe], at)
        scores.update(by_sae)
    ev = handover.load(run, EvaluateConfig)
    refs: dict[str, dict[str, str]] = {}
    for r in references(clips, ev.reference_text, ev.reference_splits):
        if r.track in present:
            refs.setdefault(r.track, {})[r.label] = r.text
    names = cat.feature_names(cat.named_features())  # ref -> name of every named feature
    named = {}
    for s in saes:
        mine = sorted((parse_feature_ref(ref).feature, name) for ref, name in names.items()
                      if parse_feature_ref(ref).sae_id == s.sae_id)
        texts = [n for _, n in mine]
        named[s.sae_id] = Named([k for k, _ in mine], texts, embed(texts) if texts else np.zeros((0, 1)))
    return Scene(saes, models, probe, scores, norms, named, refs, embed, present)


def candidates(scene: Scene, track: str, target: str, cfg: SteerabilityConfig) -> list[Candidate]:
    """Named and contrast candidates for ``track`` -> ``target`` on every SAE (module docstring)."""
    rows = [i for i, c in enumerate(scene.probe) if c.labels.get(track)]
    labels = [scene.probe[i].labels[track] for i in rows]
    wanted = target_words(scene.refs[track])[target]
    ref_emb = scene.embed([scene.refs[track][target]])
    out: list[Candidate] = []
    for s in scene.saes:
        nm = scene.named[s.sae_id]
        sims = cosine_matrix(nm.emb, ref_emb)[:, 0] if nm.names else np.zeros(0)
        picked = [nm.features[i] for i in named_candidates(nm.names, sims, wanted, cfg.named_per_sae)]
        c = contrast(scene.scores[s.sae_id][rows], labels, target)
        out += merge(picked, top_contrast(c, cfg.contrast_per_sae), s.sae_id, s.layer)
    return out


def measure_track(llm: AudioLLM, scene: Scene, track: str, cfg: SteerabilityConfig, seed: int,
                  cat: Catalog) -> tuple[list[SteerabilityRow], int]:
    """Every target of one track: (steerability rows, steered variants judged)."""
    prompt, labels = judge_prompt(track, scene.present[track])
    pool_clips = probe_pool(scene.probe, track, cfg.pool_clips, seed)
    audios = [load_audio(cat.resolve(c.path) or c.path, sr=llm.sampling_rate) for c in pool_clips]
    pool = ClipPool(llm, audios, llm.build_prompt(prompt.question, prompt.prefix),
                    label_token_ids(llm.tokenizer, labels), sorted(scene.norms), cfg.batch_rows)
    rows: list[SteerabilityRow] = []
    judged = 0
    for target in tqdm(labels, desc=f"steerability {track}", leave=False):
        t = labels.index(target)
        movable = np.flatnonzero(pool.base.answer != t)[: cfg.clips_per_target]
        if not len(movable):
            log.info("%s -> %s: every pool clip is already answered %r; nothing to measure", track, target, target)
            continue
        cands = candidates(scene, track, target, cfg)
        values = {c: values_for(scene.models[c.sae_id], c.feature, cfg.multiples, scene.norms[c.layer]) for c in cands}
        results = sweep(pool, scene.models, cands, values, cfg.multiples, t, movable, cfg.screen_clips,
                        cfg.finalists, cfg.positions)
        judged += sum(r.n for r in results) * len(cfg.multiples)
        rows += [to_row(r, track, target, prompt.fmt, pool_clips) for r in results]
    return rows, judged


def to_row(r: SweepResult, track: str, target: str, fmt: str, pool_clips: Sequence[ClipRow]) -> SteerabilityRow:
    c = r.candidate
    return SteerabilityRow(str(c.sae_id), c.feature, track, target, r.value, r.flip_rate, r.n, r.flipped, r.multiple,
                           pool_clips[r.clip].clip_id if r.clip >= 0 else None, fmt, c.how, r.flip_lower)


def steerability(run: RunConfig, model_cfg: ModelConfig | None, cfg: SteerabilityConfig,
                 llm: AudioLLM | None = None, embed: EmbedFn | None = None) -> Path:
    """Measure every track's targets into the catalog's ``steerability`` table and the report."""
    t0, c0 = time.perf_counter(), time.process_time()
    device = resolve_device(run.run.device)
    handover.save(run, cfg)
    embed = embed or handover.load(run, EvaluateConfig).build_embedder(handover.load(run, ScoreConfig), device)
    llm = llm or model_cfg.load(device)  # type: ignore[union-attr]
    store = ActivationStore(run.run.out_dir / "activations")
    rows: list[SteerabilityRow] = []
    judged = 0
    with Catalog.open(run.run.catalog_path) as cat:
        scene = build_scene(cat, store, run, cfg, embed, device)
        for track in scene.present:
            got, n = measure_track(llm, scene, track, cfg, run.run.seed, cat)
            rows += got
            judged += n
        names = cat.feature_names([r.ref for r in rows])
        with cat.transaction():
            cat.delete_where("steerability")
            cat.upsert(rows)
    out = write_report(run.run.out_dir / "steerability", rows, names, cfg, judged)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"steerability: {len(rows)} candidates over {len({(r.track, r.target) for r in rows})} targets; "
          f"{judged} steered variants judged in {wall:.1f} s ({cpu:.1f} s CPU)")
    return out


def write_report(out_dir: Path, rows: Sequence[SteerabilityRow], names: dict[str, str], cfg: SteerabilityConfig,
                 judged: int) -> Path:
    best: dict[tuple[str, str], SteerabilityRow] = {}
    for r in sorted(rows, key=lambda r: (-r.flip_lower, -r.flip_rate, abs(r.multiple), r.sae_id, r.feature)):
        best.setdefault((r.track, r.target), r)
    lines = ["# Steerability (probe split)", "",
             f"Candidates per SAE and target: {cfg.named_per_sae} named + {cfg.contrast_per_sae} by contrast; values "
             f"{', '.join(f'{m:g}' for m in cfg.multiples)} x the layer's median token norm; {judged} steered variants "
             f"judged (screen {cfg.screen_clips} clips, then {cfg.finalists} finalists on up to "
             f"{cfg.clips_per_target}).", "",
             "| track | target | best feature | name | how | value (x norm) | flipped |",
             "|---|---|---|---|---|---|---|"]
    for (track, target), r in sorted(best.items()):
        lines.append(f"| {track} | {target} | `{r.ref}` | {names.get(r.ref, '') or '-'} | {r.how} | "
                     f"{r.value:.3g} (x{r.multiple:g}) | {r.flipped} of {r.n} |")
    return write_text(out_dir / "README.md", "\n".join(lines) + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    out = steerability(run, run.section("model", ModelConfig), run.section("steerability", SteerabilityConfig))
    print(out.read_text())
    return 0
