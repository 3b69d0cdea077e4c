"""Stage ``describe``: name each kept feature's concept (AR&D 2.3).

Every top clip of a kept feature is captioned once by the AudioLLM with
"Generate a detailed caption for the audio clip" (cached per model and clip in
``clip_captions``); the p captions of a feature are summarised into a name and
a one-sentence description ("Describe the common sound-related concept present
among these captions") by the configured summarizer (``ard_core.naming``).

Named: the top-C 'ard' features of every SAE (``features.name/description``), and
for the Table 1 SAE also the baselines' top-C features ('mean_act', 'coverage',
'poly') and the 'random' representatives of the ard top-C, one naming per seed
(``method_concepts``). C is the ``top_c`` the score stage ran with (its saved
``score/score_cfg.json``), and the Table 1 SAE chosen here is recorded in
``describe/table1.json`` for evaluate.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections import defaultdict
from typing import NamedTuple, Sequence

import torch
from tqdm.auto import tqdm

from ard_core.audio import load_audio
from ard_core.catalog import Catalog, ClipCaptionRow, ClipRow, FeatureRow, MethodConceptRow, SaeRow
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.evaluation import table1_sae
from ard_core.models import AudioLLM, ModelConfig
from ard_core.naming import CAPTION_PROMPT, Summarizer
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import DescribeConfig, ScoreConfig

log = logging.getLogger(__name__)


class Job(NamedTuple):
    method: str  # 'ard', 'mean_act', 'coverage', 'poly', 'random'
    sae_id: str
    feature: int
    seed: int
    clips: tuple[str, ...]  # top clips in rank order


def jobs(cat: Catalog, saes: Sequence[SaeRow], t1: SaeRow, top_c: int) -> list[Job]:
    """Every (method, feature, seed) to name, with its top clips."""
    tops: dict[tuple[str, str, int], dict[int, str]] = defaultdict(dict)
    for r in cat.query("SELECT method, sae_id, feature, rank, clip_id FROM feature_examples WHERE kind = 'top'"):
        tops[(r["method"], r["sae_id"], r["feature"])][r["rank"]] = r["clip_id"]

    def clips(method: str, sae_id: str, f: int) -> tuple[str, ...]:
        d = tops.get((method, sae_id, f), {})
        return tuple(d[k] for k in sorted(d))

    out: list[Job] = []
    for sae in saes:
        methods = ("ard", "mean_act", "coverage", "poly") if sae.sae_id == t1.sae_id else ("ard",)
        for m in methods:
            for r in cat.query("SELECT feature FROM method_scores WHERE method = ? AND sae_id = ? AND seed = 0 "
                               "AND rank <= ? ORDER BY rank", [m, sae.sae_id, top_c]):
                out.append(Job(m, sae.sae_id, r["feature"], 0, clips(m, sae.sae_id, r["feature"])))
    for r in cat.query("SELECT DISTINCT seed, feature FROM method_scores WHERE method = 'random' AND sae_id = ? "
                       "ORDER BY seed, feature", [t1.sae_id]):
        out.append(Job("random", t1.sae_id, r["feature"], r["seed"], clips(f"random:{r['seed']}", t1.sae_id, r["feature"])))
    return [j for j in out if j.clips]


@torch.inference_mode()
def caption_clips(llm: AudioLLM, clips: dict[str, ClipRow], ids: Sequence[str], cfg: DescribeConfig) -> dict[str, str]:
    prompt = llm.build_prompt(CAPTION_PROMPT)
    out: dict[str, str] = {}
    for i in tqdm(range(0, len(ids), cfg.caption_batch), desc="caption", unit="batch"):
        batch = list(ids[i : i + cfg.caption_batch])
        inputs = llm.prepare([load_audio(clips[c].path, sr=llm.sampling_rate) for c in batch], [prompt] * len(batch))
        gen = llm.model.generate(**inputs, max_new_tokens=cfg.caption_max_new_tokens, do_sample=False,
                                 pad_token_id=llm.tokenizer.pad_token_id)
        texts = llm.tokenizer.batch_decode(gen[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        out.update((c, t.strip()) for c, t in zip(batch, texts))
    return out


def describe(run: RunConfig, model_cfg: ModelConfig, cfg: DescribeConfig, llm: AudioLLM | None = None,
             summarizer: Summarizer | None = None) -> int:
    """Name the features the score stage kept; returns the number of concepts named."""
    device = resolve_device(run.run.device)
    top_c = handover.load(run, ScoreConfig).top_c  # what score kept, whatever [score] says now
    handover.save(run, cfg)
    summarizer = summarizer or cfg.summarizer.build(device)
    with Catalog.open(run.run.catalog_path) as cat:
        saes = cat.rows(SaeRow)
        if not saes or not cat.count("method_scores"):
            raise ConfigError("no scored SAEs in the catalog; run the score stage first")
        t1 = table1_sae(saes, cfg.table1_sae)
        todo = jobs(cat, saes, t1, top_c)
        clips = {c.clip_id: c for c in cat.rows(ClipRow)}
        llm = llm or model_cfg.load(device)
        cached = {r["clip_id"]: r["caption"] for r in cat.query(
            "SELECT clip_id, caption FROM clip_captions WHERE model = ?", [llm.name])}
        missing = sorted({c for j in todo for c in j.clips} - set(cached))
        if missing:
            new = caption_clips(llm, clips, missing, cfg)
            cat.upsert([ClipCaptionRow(llm.name, c, t) for c, t in new.items()])
            cached.update(new)
        concepts = []
        for j in tqdm(todo, desc="name concepts", unit="feature"):
            c = summarizer.summarize([cached[x] for x in j.clips])
            concepts.append(MethodConceptRow(j.method, j.sae_id, j.feature, j.seed, c.name, c.description))
        named = {(c.sae_id, c.feature): c for c in concepts if c.method == "ard"}
        feats = [dataclasses.replace(f, name=named[(f.sae_id, f.feature)].name,
                                     description=named[(f.sae_id, f.feature)].description)
                 if (f.sae_id, f.feature) in named else dataclasses.replace(f, name=None, description=None)
                 for f in cat.rows(FeatureRow)]
        with cat.transaction():  # concepts and feature names change together or not at all
            cat.delete_where("method_concepts")
            cat.upsert(concepts)
            cat.upsert(feats)
    handover.save(run, handover.Table1Choice(t1.sae_id))
    return len(concepts)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    n = describe(run, run.section("model", ModelConfig), run.section("describe", DescribeConfig))
    print(f"named {n} concepts")
    return 0
