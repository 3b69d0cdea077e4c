"""The evaluate stage's detection scores: one row per named feature and judge (``ard_core.detection``).

For every SAE, the named features' mean activation mu on every probing clip (the score stage's
splits) comes from the activation store; each feature draws its balanced sample of activating
(mu > 0) and non-activating (mu = 0) clips, seeded by (run seed, SAE, feature). The 'clap' judge
needs the sampled clips' CLAP audio embeddings: cached ones are read from ``clip_embeddings``,
missing ones computed and cached. The 'llm' judge reads each sampled clip's caption.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ard_core.catalog import Catalog, ClipRow, DetectionRow, SaeRow
from ard_core.clap import cached_audio_embeddings
from ard_core.clip_eval import clip_means
from ard_core.detection import Sample, balanced_sample, clap_detection, feature_rng, llm_detection
from ard_core.evaluation import EmbedFn
from ard_core.naming import ChatEndpoint
from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore
from precompute.configs import EvaluateConfig, ScoreConfig


def _named(cat: Catalog) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for r in cat.query("SELECT sae_id, feature, name FROM features WHERE name IS NOT NULL AND trim(name) <> '' "
                       "ORDER BY sae_id, feature"):
        out.setdefault(r["sae_id"], []).append((r["feature"], r["name"]))
    return out


def _samples(store: ActivationStore, sae_row: SaeRow, feats: list[tuple[int, str]], probe: set[str],
             score_cfg: ScoreConfig, n: int, seed: int, device: str) -> tuple[list[str], list[Sample]]:
    sae = TopKSAE.load(sae_row.path, device=device).eval()
    cm = clip_means(store, sae_row.layer, probe, sae, [f for f, _ in feats], batch_clips=score_cfg.batch_clips,
                    encode_tokens=score_cfg.encode_tokens, desc=f"detection {sae_row.sae_id}")
    return cm.clip_ids, [balanced_sample(cm.mu[:, j], n, feature_rng(seed, sae_row.sae_id, f))
                         for j, (f, _) in enumerate(feats)]


def detection_rows(cat: Catalog, store: ActivationStore, saes: Sequence[SaeRow], clips: Sequence[ClipRow],
                   score_cfg: ScoreConfig, cfg: EvaluateConfig, clap_text: EmbedFn | None,
                   endpoint: ChatEndpoint | None,
                   seed: int, device: str) -> list[DetectionRow]:
    """Detection scores of every named feature of every SAE, for each judge of ``cfg.detection_judges``."""
    named = _named(cat)
    probe = {c.clip_id for c in clips if c.split in score_cfg.splits}
    by_id = {c.clip_id: c for c in clips}
    drawn = {s.sae_id: _samples(store, s, named[s.sae_id], probe, score_cfg, cfg.detection_n, seed, device)
             for s in saes if named.get(s.sae_id)}
    rows: list[DetectionRow] = []
    if "clap" in cfg.detection_judges and drawn:
        assert clap_text is not None  # built by the stage whenever 'clap' is a judge
        needed = {ids[i] for ids, samples in drawn.values() for s in samples for i in np.concatenate([s.pos, s.neg])}
        audio = cached_audio_embeddings(cat, {c: by_id[c].path for c in needed}, needed, score_cfg.clap_backend,
                                        score_cfg.clap_model, device)
        names = sorted({n for feats in named.values() for _, n in feats})
        name_emb = dict(zip(names, clap_text(names)))
        zero = np.zeros_like(next(iter(audio.values())))  # for clips no sample drew: never read
        for sae_id, (ids, samples) in drawn.items():
            table = np.stack([audio.get(c, zero) for c in ids])
            for (f, name), sample in zip(named[sae_id], samples):
                d = clap_detection(np.asarray(name_emb[name], np.float32), table, sample)
                rows.append(DetectionRow(sae_id, f, "clap", d.score, d.n_pos, d.n_neg))
    if "llm" in cfg.detection_judges and drawn:
        assert endpoint is not None  # built by the stage whenever 'llm' is a judge
        for sae_id, (ids, samples) in drawn.items():
            captions = [by_id[c].caption for c in ids]
            for (f, name), sample in tqdm(list(zip(named[sae_id], samples)), desc=f"llm detection {sae_id}",
                                          leave=False):
                d = llm_detection(endpoint, name, captions, sample)
                rows.append(DetectionRow(sae_id, f, "llm", d.score, d.n_pos, d.n_neg))
    return rows
