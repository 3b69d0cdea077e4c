"""Stage ``steer-eval``: steering sensitivity (AR&D Table 3), chosen on probe, judged on test.

For each mapping SOURCE->TARGET (Neutral->Happy, Sad->Happy, Happy->Angry, Female->Male,
Male->Female) and each method, one (feature, value) per layer is chosen on the PROBE split:

- **AR&D**: the best ``steerability`` row for the target among that layer's SAE features
  (the steerability stage's named and contrast candidates, values and flip rates);
- **Poly. Feats.**: the raw neuron of the layer with the highest probe contrast (mean r on
  target-labelled probe clips minus on the others), swept over the same multiples of the
  layer's median token norm on the same probe clips (the steerability stage's saved settings).

Each choice is then applied alone, at the same positions, to every source sample of the
``split`` (test) split, and the best layer per method is the one whose choice flipped the
most probe clips, so nothing chosen depends on a test clip. Sensitivity has two denominators:
the samples that shift to the target (unsteered answer not the target, steered answer the
target) over all source samples (``sensitivity_all``, the paper's), and over the source
samples not already answered with the target (``sensitivity``). Judges: 'label_prob' (the
argmax of the labels' next-token logits after the P3 prefix, as steerability) or 'llm' (the
steered generation shown to the naming stage's OpenAI-compatible endpoint, which says yes/no).

Rows go to the catalog's ``steering_results`` (one per mapping, method and layer;
``best_layer`` marks Table 3's) and the report to ``OUT_DIR/steering/README.md``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ard_core.audio import load_audio
from ard_core.catalog import Catalog, ClipRow, EvaluationRow, SaeRow, SteeringResultRow
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.models import AudioLLM, ModelConfig
from ard_core.prompts import label_token_ids
from ard_core.sae import TopKSAE
from ard_core.spread import bootstrap
from ard_core.steer_batch import ClipPool
from ard_core.steerability import (
    Candidate,
    clip_scores,
    contrast,
    judge_prompt,
    probe_pool,
    sweep,
    top_contrast,
    values_for,
)
from ard_core.steering import RowSteer, SteerSpec, steering
from ard_core.store import ActivationStore
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import DescribeConfig, SteerabilityConfig, SteerEvalConfig
from precompute.steer_eval_report import write_report

log = logging.getLogger(__name__)


class Choice(NamedTuple):
    """One method's (feature, value) at one layer, chosen on the probe split."""

    method: str
    """'ard' or 'poly'."""
    layer: int
    sae_id: str
    """The SAE; for poly, MODEL-lLAYER-raw (the layer's raw neurons)."""
    feature: int
    value: float
    probe_flip_rate: float
    probe_flip_lower: float
    """The rate's Wilson lower bound (what the best layer is chosen by)."""
    multiple: float
    """The value as a multiple of the layer's median token norm."""


def track_of(clips: Sequence[ClipRow], source: str, target: str) -> str:
    for c in clips:
        for t, l in c.labels.items():
            if l == source and any(d.labels.get(t) == target for d in clips):
                return t
    raise ConfigError(f"no track has both labels {source!r} and {target!r}")


def poly_id(model: str, layer: int) -> str:
    return f"{model}-l{layer}-raw"


def ard_choices(cat: Catalog, saes: Sequence[SaeRow], track: str, target: str) -> list[Choice]:
    """Per layer, its SAEs' best steerability row for the target (rows come best first); none when every
    probe clip was already answered with the target."""
    if track not in cat.steerability_tracks():
        raise ConfigError(f"no steerability rows for the {track!r} track; run the steerability stage with it first")
    layer_of = {s.sae_id: s.layer for s in saes}
    out: dict[int, Choice] = {}
    for r in cat.steerability_for(track, target):
        layer = layer_of.get(r.sae_id)
        if layer is not None and layer not in out:
            out[layer] = Choice("ard", layer, r.sae_id, r.feature, r.value, r.flip_rate, r.flip_lower, r.multiple)
    return [out[l] for l in sorted(out)]


class Probe(NamedTuple):
    """A track's probe pool, as the steerability stage built it."""

    pool: ClipPool
    clips: list[ClipRow]
    labels: tuple[str, ...]
    prompt: str
    """The built prompt (chat template and prefix)."""
    audios: list[np.ndarray]


def poly_choices(probe: Probe, store: ActivationStore, probe_clips: Sequence[ClipRow], layers: Sequence[int],
                 model: str, track: str, target: str, st: SteerabilityConfig) -> list[Choice]:
    """Per layer, the raw neuron of highest probe contrast, at its best value of the steerability sweep."""
    t = probe.labels.index(target)
    movable = np.flatnonzero(probe.pool.base.answer != t)[: st.clips_per_target]
    labelled = [c for c in probe_clips if c.labels.get(track)]
    out = []
    for layer in layers:
        _, r, norm = clip_scores(store, layer, [c.clip_id for c in labelled], {})
        top = top_contrast(contrast(r, [c.labels[track] for c in labelled], target), 1)
        if not top:
            continue
        cand = Candidate(None, layer, top[0], "contrast")
        res = sweep(probe.pool, {}, [cand], {cand: values_for(None, top[0], st.multiples, norm)}, st.multiples, t,
                    movable, len(movable), 0, st.positions)[0]
        out.append(Choice("poly", layer, poly_id(model, layer), top[0], res.value, res.flip_rate, res.flip_lower,
                          res.multiple))
    return out


def best_layer(choices: Sequence[Choice]) -> int | None:
    """The layer whose choice ranks first as steerability ranks rows: the flip rate's lower bound, the rate,
    the smaller multiple, then the shallower layer."""
    if not choices:
        return None
    return min(choices, key=lambda c: (-c.probe_flip_lower, -c.probe_flip_rate, abs(c.multiple), c.layer)).layer


@torch.inference_mode()
def llm_judge(llm: AudioLLM, audios: Sequence[np.ndarray], prompt: str, specs: Sequence[SteerSpec],
              positions: Sequence[str], track: str, target: str, endpoint) -> np.ndarray:  # noqa: ANN001
    """1 where the judge says the (steered) generated answer names the target."""
    out = []
    for a in audios:
        inputs = llm.prepare([a], [prompt])
        with steering(llm, specs, list(positions) + ["generated"], inputs["input_ids"], inputs["attention_mask"]):
            gen = llm.model.generate(**inputs, max_new_tokens=8, do_sample=False,
                                     pad_token_id=llm.tokenizer.pad_token_id)
        answer = llm.tokenizer.decode(gen[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        verdict = endpoint.chat([{"role": "user", "content":
                                  f"A model was asked for the {track} in an audio clip and answered: "
                                  f"\"{prompt.rsplit(chr(10), 1)[-1]}{answer}\". Does the answer say the {track} is "
                                  f"{target}? Reply with yes or no only."}], max_tokens=3)
        out.append(int(verdict.strip().lower().startswith("yes")))
    return np.array(out)


class Context(NamedTuple):
    llm: AudioLLM
    cat: Catalog
    store: ActivationStore
    saes: list[SaeRow]
    models: dict[str, TopKSAE]
    clips: list[ClipRow]
    st: SteerabilityConfig
    cfg: SteerEvalConfig
    seed: int
    endpoint: object | None


def make_pool(ctx: Context, clips: Sequence[ClipRow], track: str) -> Probe:
    present = sorted({c.labels[track] for c in ctx.clips if c.labels.get(track)})
    prompt, labels = judge_prompt(track, present)
    audios = [load_audio(ctx.cat.resolve(c.path) or c.path, sr=ctx.llm.sampling_rate) for c in clips]
    text = ctx.llm.build_prompt(prompt.question, prompt.prefix)
    pool = ClipPool(ctx.llm, audios, text, label_token_ids(ctx.llm.tokenizer, labels),
                    sorted({s.layer for s in ctx.saes}), ctx.cfg.batch_rows)
    return Probe(pool, list(clips), labels, text, audios)


def judge_choice(ctx: Context, test: Probe, c: Choice, track: str, target: str) -> np.ndarray:
    """(source samples,) bool: the steered answer is the target (by the configured judge)."""
    sae = ctx.models[c.sae_id] if c.method == "ard" else None
    if ctx.cfg.judge == "llm":
        spec = SteerSpec(layer=c.layer, values={c.feature: c.value}, sae=sae)
        return llm_judge(ctx.llm, test.audios, test.prompt, [spec], ctx.st.positions, track, target,
                         ctx.endpoint).astype(bool)
    n = len(test.clips)
    spec = RowSteer(c.layer, torch.full((n,), c.feature, dtype=torch.int64), torch.full((n,), c.value), sae)
    return test.pool.steered(spec, np.arange(n), ctx.st.positions).answer == test.labels.index(target)


def eval_mapping(ctx: Context, mapping: str, probes: dict,
                 choices_cache: dict) -> tuple[list[SteeringResultRow], list[EvaluationRow]]:
    """Every choice's test sensitivity (catalog rows), and Table 3's figure of each method (its best
    layer's choice) with a bootstrap over the movable source samples (``evaluations``, 'steering')."""
    source, target = mapping.split("->")
    track = track_of(ctx.clips, source, target)
    if track not in probes:
        probe_clips = [c for c in ctx.clips if c.split == ctx.st.split]
        probes[track] = make_pool(ctx, probe_pool(probe_clips, track, ctx.st.pool_clips, ctx.seed), track)
    if (track, target) not in choices_cache:
        probe_clips = [c for c in ctx.clips if c.split == ctx.st.split]
        layers = sorted({s.layer for s in ctx.saes})
        ard = ard_choices(ctx.cat, ctx.saes, track, target)
        choices_cache[(track, target)] = ard + (poly_choices(probes[track], ctx.store, probe_clips, layers,
                                                             ctx.saes[0].model, track, target, ctx.st) if ard else [])
    choices: list[Choice] = choices_cache[(track, target)]
    if not choices:
        log.warning("%s: every probe clip is already answered %r, so steerability chose nothing; skipped",
                    mapping, target)
        return [], []
    src = [c for c in ctx.clips if c.split == ctx.cfg.split and c.labels.get(track) == source][: ctx.cfg.max_samples]
    if not src:
        raise ConfigError(f"no {ctx.cfg.split!r} clip is labelled {track}={source!r}; mapping {mapping!r} needs some")
    test = make_pool(ctx, src, track)
    movable = test.pool.base.answer != test.labels.index(target)
    best = {m: best_layer([c for c in choices if c.method == m]) for m in ("ard", "poly")}
    rows, spreads = [], []
    for c in choices:
        shifted = judge_choice(ctx, test, c, track, target) & movable
        n_mov, n_all = int(movable.sum()), len(src)
        if c.layer == best[c.method] and n_mov:
            s = bootstrap(shifted[movable].astype(np.float64), n_resamples=ctx.cfg.bootstrap, seed=ctx.seed)
            spreads.append(EvaluationRow("steering", c.method, c.sae_id, mapping, s.value, s.std, "run",
                                         s.low, s.high, s.n))
        rows.append(SteeringResultRow(mapping, c.method, c.sae_id, c.feature, c.value, ctx.cfg.judge,
                                      float(shifted.sum() / n_mov) if n_mov else float("nan"), n_mov, c.layer,
                                      c.layer == best[c.method], float(shifted.sum() / n_all), n_all,
                                      c.probe_flip_rate))
    return rows, spreads


def steer_eval(run: RunConfig, model_cfg: ModelConfig | None, cfg: SteerEvalConfig,
               llm: AudioLLM | None = None) -> Path:
    """Table 3 into the catalog and ``steering/README.md`` (module docstring)."""
    device = resolve_device(run.run.device)
    handover.save(run, cfg)
    st = handover.load(run, SteerabilityConfig)
    if cfg.split == st.split:
        raise ConfigError(f"[steer_eval].split {cfg.split!r} is the split steerability chose the values on; "
                          "judge them on another (the test split)")
    endpoint = handover.load(run, DescribeConfig).summarizer.endpoint() if cfg.judge == "llm" else None
    llm = llm or model_cfg.load(device)  # type: ignore[union-attr]
    store = ActivationStore(run.run.out_dir / "activations")
    with Catalog.open(run.run.catalog_path) as cat:
        saes = cat.saes(controls=False)  # the random controls are for naming and probing
        models = {s.sae_id: TopKSAE.load(cat.resolve(s.path) or s.path, device=device).eval() for s in saes}
        ctx = Context(llm, cat, store, saes, models, cat.rows(ClipRow), st, cfg, run.run.seed, endpoint)
        rows: list[SteeringResultRow] = []
        spreads: list[EvaluationRow] = []
        probes: dict = {}
        cache: dict = {}
        for mapping in cfg.mappings:
            got, spread = eval_mapping(ctx, mapping, probes, cache)
            rows, spreads = rows + got, spreads + spread
        names = cat.feature_names([f"{r.sae_id}/{r.feature}" for r in rows if r.method == "ard"])
        with cat.transaction():
            cat.delete_where("steering_results", judge=cfg.judge)
            cat.upsert(rows)
            cat.delete_where("evaluations", table_name="steering", protocol="run")
            cat.upsert(spreads)
    return write_report(run.run.out_dir / "steering", rows, names, cfg)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    out = steer_eval(run, run.section("model", ModelConfig), run.section("steer_eval", SteerEvalConfig))
    print((out / "README.md").read_text())
    return 0
