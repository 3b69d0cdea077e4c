"""Stage ``steer-eval``: steering sensitivity (AR&D Table 3).

For each mapping SOURCE->TARGET (Neutral->Happy, Sad->Happy, Happy->Angry,
Female->Male), the features whose concept names are most similar to the target
label's reference text (``ard_core.evaluation.references``) are selected: the
top ``features_per_mapping`` 'ard' features of the Table 1 SAE, and as many
'poly' neurons (raw residual dimensions at the same layer, named the same way).
Each feature alone is clamped ('set') to ``multiple x its max activation`` for
every multiple of the sweep, on every source sample of the split, at the audio
and prompt positions.

Sensitivity = among source samples the unsteered model does NOT already answer
with the target, the share whose steered answer is the target. Judges:
'label_prob' (offline default: argmax of the labels' next-token probabilities
after the P3 prompt) and 'llm' (the steered generated answer is shown to the
naming stage's OpenAI-compatible endpoint, which says yes/no).

Table 3 (Markdown) gives, per mapping and method, the best multiple's mean over
the selected features; the full sweep is in the catalog (``steering_results``)
and under ``OUT_DIR/steering/``. Table 3 itself, with a bootstrap over the source
samples (``ard_core.spread.table3_spread``), is in ``evaluations`` ('steering').
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ard_core.audio import load_audio
from ard_core.catalog import Catalog, ClipRow, EvaluationRow, SaeRow, SteeringResultRow
from ard_core.config import ConfigError, RunConfig, resolve_device
from ard_core.durable import write_text
from ard_core.evaluation import EmbedFn, cosine_matrix, references
from ard_core.models import AudioLLM, ModelConfig
from ard_core.prompts import EMOTION_NEUTRAL_FORMAT, attribute_prompt, label_token_ids, p3_options
from ard_core.sae import TopKSAE
from ard_core.spread import table3_spread
from ard_core.steering import SteerSpec, steering
from ard_core.store import ActivationStore
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import DescribeConfig, EvaluateConfig, ScoreConfig, SteerEvalConfig

log = logging.getLogger(__name__)


class Candidate(NamedTuple):
    method: str
    feature: int
    name: str
    similarity: float
    max_act: float


def track_of(clips: Sequence[ClipRow], source: str, target: str) -> str:
    for c in clips:
        for t, l in c.labels.items():
            if l == source and any(d.labels.get(t) == target for d in clips):
                return t
    raise ConfigError(f"no track has both labels {source!r} and {target!r}")


def poly_max(store: ActivationStore, layer: int, neurons: Sequence[int]) -> dict[int, float]:
    best = np.full(len(neurons), -np.inf)
    for _, x in store.iter_clips(layer):
        if len(x):
            best = np.maximum(best, x[:, list(neurons)].astype(np.float32).max(0))
    return dict(zip(neurons, best.tolist()))


def candidates(cat: Catalog, t1: SaeRow, target_emb: np.ndarray, embed: EmbedFn, n: int,
               store: ActivationStore) -> list[Candidate]:
    out: list[Candidate] = []
    for method in ("ard", "poly"):
        rows = cat.query("SELECT c.feature, c.name, f.max_act, s.monosemanticity FROM method_concepts c "
                         "JOIN method_scores s USING (method, sae_id, feature, seed) "
                         "LEFT JOIN features f ON f.sae_id = c.sae_id AND f.feature = c.feature "
                         "WHERE c.method = ? AND c.sae_id = ? AND c.seed = 0 ORDER BY c.feature",  # a join's order varies
                         [method, t1.sae_id])
        if not rows:
            continue
        sims = cosine_matrix(embed([r["name"] for r in rows]), target_emb[None])[:, 0]
        order = sorted(range(len(rows)), key=lambda i: (-sims[i], -(rows[i]["monosemanticity"] or 0), rows[i]["feature"]))
        chosen = [rows[i] | {"sim": float(sims[i])} for i in order[:n]]
        maxes = poly_max(store, t1.layer, [r["feature"] for r in chosen]) if method == "poly" else {}
        out += [Candidate(method, r["feature"], r["name"], r["sim"],
                          float(maxes.get(r["feature"], r["max_act"] or 0.0))) for r in chosen]
    return out


@torch.inference_mode()
def predict(llm: AudioLLM, audios: Sequence[np.ndarray], prompt: str, label_ids: Sequence[int],
            specs: Sequence[SteerSpec], positions: Sequence[str], batch: int) -> np.ndarray:
    """Argmax label index per clip (label_prob judge), optionally steered."""
    preds = []
    ids = torch.as_tensor(list(label_ids))
    for i in range(0, len(audios), batch):
        inputs = llm.prepare(list(audios[i : i + batch]), [prompt] * len(audios[i : i + batch]))
        if specs:
            with steering(llm, specs, positions, inputs["input_ids"], inputs["attention_mask"]):
                logits = llm.model(**inputs, use_cache=False).logits[:, -1]
        else:
            logits = llm.model(**inputs, use_cache=False).logits[:, -1]
        preds.append(logits[:, ids].argmax(-1).cpu().numpy())
    return np.concatenate(preds) if preds else np.zeros(0, int)


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


def steer_eval(run: RunConfig, model_cfg: ModelConfig, cfg: SteerEvalConfig, llm: AudioLLM | None = None,
               embed: EmbedFn | None = None) -> Path:
    """Table 3 into the catalog and ``steering/README.md``: the features are chosen on the SAE
    describe chose for Table 1, by similarity to references built as evaluate built them."""
    device = resolve_device(run.run.device)
    out_dir = run.run.out_dir / "steering"
    handover.save(run, cfg)
    ev_cfg = handover.load(run, EvaluateConfig)
    embed = embed or ev_cfg.build_embedder(handover.load(run, ScoreConfig), device)
    endpoint = handover.load(run, DescribeConfig).summarizer.endpoint() if cfg.judge == "llm" else None
    llm = llm or model_cfg.load(device)
    store = ActivationStore(run.run.out_dir / "activations")
    rows: list[SteeringResultRow] = []
    outcomes: dict[tuple[str, str], list[list[np.ndarray]]] = defaultdict(list)  # per feature, per value: hits
    chosen: dict[str, list[Candidate]] = {}
    with Catalog.open(run.run.catalog_path) as cat:
        saes = cat.rows(SaeRow)
        if not saes or not cat.count("method_concepts"):
            raise ConfigError("no named concepts in the catalog; run score and describe first")
        t1 = handover.table1(run, saes)
        sae = TopKSAE.load(t1.path, device=device).eval()
        clips = cat.rows(ClipRow)
        refs = {(r.track, r.label): r.text for r in references(clips, ev_cfg.reference_text, ev_cfg.reference_splits)}
        for mapping in cfg.mappings:
            source, target = mapping.split("->")
            track = track_of(clips, source, target)
            labels = list(p3_options(track, sorted({c.labels[track] for c in clips if c.labels.get(track)})))
            fmt = EMOTION_NEUTRAL_FORMAT if track == "emotion" and "neutral" in labels else "P3"
            p = attribute_prompt(track, fmt, labels)
            prompt = llm.build_prompt(p.question, p.prefix)
            ids = label_token_ids(llm.tokenizer, labels)
            src = [c for c in clips if c.split == cfg.split and c.labels.get(track) == source][: cfg.max_samples]
            audios = [load_audio(c.path, sr=llm.sampling_rate) for c in src]
            base = predict(llm, audios, prompt, ids, [], cfg.positions, cfg.batch_size)
            movable = base != labels.index(target)
            cands = candidates(cat, t1, embed([refs[(track, target)]])[0], embed, cfg.features_per_mapping, store)
            chosen[mapping] = cands
            todo = [a for a, m in zip(audios, movable) if m]
            for c in tqdm(cands, desc=f"steer {mapping}", leave=False):
                outcomes[(mapping, c.method)].append([])
                for mult in cfg.multiples:
                    spec = SteerSpec(layer=t1.layer, values={c.feature: mult * c.max_act},
                                     sae=sae if c.method == "ard" else None, mode="set")
                    if cfg.judge == "label_prob":
                        hit = predict(llm, todo, prompt, ids, [spec], cfg.positions, cfg.batch_size) == labels.index(target)
                    else:
                        hit = llm_judge(llm, todo, prompt, [spec], cfg.positions, track, target, endpoint)
                    outcomes[(mapping, c.method)][-1].append(np.asarray(hit, np.float64))
                    rows.append(SteeringResultRow(mapping, c.method, t1.sae_id, c.feature, mult, cfg.judge,
                                                  float(hit.mean()) if len(todo) else float("nan"), len(todo)))
        spreads = table3_rows(outcomes, t1.sae_id, ev_cfg.bootstrap, run.run.seed)
        with cat.transaction():
            cat.delete_where("steering_results", judge=cfg.judge)
            cat.upsert(rows)
            cat.delete_where("evaluations", table_name="steering", protocol="run")
            cat.upsert(spreads)
    write_report(out_dir, t1, rows, chosen, cfg)
    return out_dir


def table3_rows(outcomes: dict[tuple[str, str], list[list[np.ndarray]]], sae_id: str, n_boot: int,
                seed: int) -> list[EvaluationRow]:
    """Table 3 as ``evaluations`` rows ('steering'; metric = the mapping): each (mapping, method)'s best
    value's mean sensitivity over its features, with a bootstrap over the source samples."""
    rows = []
    for (mapping, method), per_feature in outcomes.items():
        hits = np.stack([np.stack(per_value, axis=-1) for per_value in per_feature], axis=1)  # (samples, F, values)
        if len(hits):
            s = table3_spread(hits, n_resamples=n_boot, seed=seed)
            rows.append(EvaluationRow("steering", method, sae_id, mapping, s.value, s.std, "run", s.low, s.high, s.n))
    return rows


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not np.isnan(x)]
    return float(np.mean(xs)) if xs else float("nan")


def write_report(out_dir: Path, t1: SaeRow, rows: Sequence[SteeringResultRow], chosen, cfg: SteerEvalConfig) -> Path:  # noqa: ANN001
    by = defaultdict(list)
    for r in rows:
        by[(r.mapping, r.method, r.value)].append(r.sensitivity)
    lines = [f"# Steering sensitivity (Table 3) on {t1.sae_id}, judge = {cfg.judge}", "",
             "Best multiple of the mean over the selected features (n = source samples not already predicted as the target).",
             "", "| Method | " + " | ".join(cfg.mappings) + " |", "|---|" + "---|" * len(cfg.mappings)]
    for method, label in (("poly", "Poly. Feats."), ("ard", "AR&D")):
        cells = []
        for m in cfg.mappings:
            means = {v: _mean(by[(m, method, v)]) for v in cfg.multiples if by.get((m, method, v))}
            means = {v: x for v, x in means.items() if not np.isnan(x)}
            if means:
                v = max(means, key=means.get)
                n = next(r.n for r in rows if r.mapping == m and r.method == method)
                cells.append(f"{means[v]:.2f} (x{v:g}, n={n})")
            else:
                cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Full sweep (mean over features)", "", "| mapping | method | " +
              " | ".join(f"x{v:g}" for v in cfg.multiples) + " |", "|---|---|" + "---|" * len(cfg.multiples)]
    for m in cfg.mappings:
        for method in ("poly", "ard"):
            if any(by.get((m, method, v)) for v in cfg.multiples):
                lines.append(f"| {m} | {method} | " + " | ".join(
                    f"{_mean(by[(m, method, v)]):.2f}" if by.get((m, method, v)) else "-" for v in cfg.multiples) + " |")
    lines += ["", "## Selected features", ""]
    for m, cands in chosen.items():
        lines.append(f"- **{m}**: " + "; ".join(f"{c.method} `{t1.sae_id}/{c.feature}` '{c.name}' "
                                               f"(sim {c.similarity:.2f}, max act {c.max_act:.2f})" for c in cands))
    return write_text(out_dir / "README.md", "\n".join(lines) + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    out = steer_eval(run, run.section("model", ModelConfig), run.section("steer_eval", SteerEvalConfig))
    print((out / "README.md").read_text())
    return 0
