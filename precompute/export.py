"""Tool ``export``: the run's catalog in the field's formats.

    python -m precompute export --config configs/demo.toml --format neuronpedia --out exports/
    python -m precompute export --config configs/demo.toml --format parquet --out parquet/

``neuronpedia`` writes Neuronpedia's import layout (:mod:`ard_core.neuronpedia`): per SAE its
release, model, source set and source records, and features, activations (each feature's 'ard'
top clips, recomputed from the activation store) and explanations (the describe stage's names)
in ``batch-N.jsonl.gz`` files. ``parquet`` writes every catalog table as ``TABLE.parquet``.
``docs/exports.md`` maps every field.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple, Sequence

from tqdm.auto import tqdm

from ard_core.catalog import Catalog, ClipRow, FeatureExampleRow, FeatureRow, ModelRow, SaeRow, SimilarFeatureRow
from ard_core.config import ConfigError, RunConfig
from ard_core.neuronpedia import (NeuronpediaExport, activation_record, explanation_record, feature_record,
                                  source_id, source_records, write_jsonl)
from ard_core.sae import TopKSAE
from ard_core.store import ActivationStore
from ard_core.traces import clip_traces
from precompute import handover
from precompute.cli import add_config_argument, load_config
from precompute.configs import DescribeConfig, ScoreConfig

log = logging.getLogger(__name__)
FORMATS = ("neuronpedia", "parquet")


def _batches(features: list[FeatureRow], size: int) -> list[list[FeatureRow]]:
    return [features[i:i + size] for i in range(0, len(features), size)]


def _activations(sae: TopKSAE, store: ActivationStore, row: SaeRow, batch: list[FeatureRow],
                 examples: dict[int, list[FeatureExampleRow]], clips: dict[str, ClipRow],
                 cfg: NeuronpediaExport, model: str, created: dt.datetime) -> list[dict]:
    """One record per top clip of the batch's features, encoding each clip once for all of them."""
    by_clip: dict[str, list[int]] = defaultdict(list)
    for f in batch:
        for e in examples.get(f.feature, []):
            by_clip[e.clip_id].append(f.feature)
    traces = {}
    for clip_id, feats in by_clip.items():
        duration = clips[clip_id].duration_s if clip_id in clips else None
        for k, tr in clip_traces(sae, store, row.layer, feats, clip_id, duration).items():
            traces[(k, clip_id)] = tr
    sid = source_id(row.layer, row.expansion)
    out = []
    for f in batch:
        for e in examples.get(f.feature, []):
            tr = traces[(f.feature, e.clip_id)]
            if tr.acts.size:  # a clip without stored tokens has nothing to show
                out.append(activation_record(model, sid, f.feature, e.clip_id, e.rank, tr.times, tr.acts, cfg, created))
    return out


class Provenance(NamedTuple):
    """What every SAE's records share: the probing clips' count and datasets, the namer."""

    n_probe: int
    datasets: list[str]
    explainer: str | None
    """The describe stage's summarizer ('consensus' or its model); None when describe has not run."""


def provenance(run: RunConfig, cat: Catalog) -> Provenance:
    score = handover.load(run, ScoreConfig)  # the probing clips the examples were chosen from
    probe = [c for c in cat.rows(ClipRow) if c.split in score.splits]
    try:
        s = handover.load(run, DescribeConfig).summarizer
        explainer = s.backend if s.backend == "consensus" else s.model
    except handover.StageOutputMissing:
        explainer = None
    return Provenance(len(probe), sorted({c.dataset for c in probe if c.dataset}), explainer)


def export_sae(cat: Catalog, store: ActivationStore, row: SaeRow, out: Path, cfg: NeuronpediaExport,
               prov: Provenance, created: dt.datetime) -> Path:
    """One SAE's folder ``out/MODEL/LAYER-SET/`` in Neuronpedia's layout."""
    model = cat.rows(ModelRow, "model = ?", [row.model])
    n_layers, d_model = (model[0].n_layers, model[0].d_model) if model else (0, row.d_in)
    clips = {c.clip_id: c for c in cat.rows(ClipRow)}
    folder = out / row.model / source_id(row.layer, row.expansion)
    for name, record in source_records(row.model, row.layer, row.expansion, n_layers, d_model, prov.n_probe,
                                       prov.datasets, cfg, created).items():
        write_jsonl(folder / name, [record], gz=False)
    features = cat.rows(FeatureRow, "sae_id = ?", [row.sae_id])
    examples: dict[int, list[FeatureExampleRow]] = defaultdict(list)
    for e in cat.rows(FeatureExampleRow, "method = 'ard' AND sae_id = ? AND kind = 'top'", [row.sae_id]):
        examples[e.feature].append(e)
    similar: dict[int, list[SimilarFeatureRow]] = defaultdict(list)
    for s in cat.rows(SimilarFeatureRow, "sae_id = ? AND kind = 'decoder'", [row.sae_id]):
        similar[s.feature].append(s)
    steer = cat.best_steerability([f"{row.sae_id}/{f.feature}" for f in features])
    sae = TopKSAE.load(cat.resolve(row.path) or row.path).eval()
    hook = f"blocks.{row.layer}.hook_resid_post"
    sid = source_id(row.layer, row.expansion)
    for b, batch in enumerate(tqdm(_batches(features, cfg.batch_size), desc=f"export {row.sae_id}", leave=False)):
        feats = []
        for f in batch:
            st = steer.get(f"{row.sae_id}/{f.feature}")
            near = similar.get(f.feature, [])
            feats.append(feature_record(row.model, sid, f.feature, f.max_act, f.density, hook,
                                        st.value if st is not None and st.flipped > 0 else None,
                                        [s.other_feature for s in near], [s.similarity for s in near], cfg, created))
        write_jsonl(folder / "features" / f"batch-{b}.jsonl.gz", feats, gz=True)
        write_jsonl(folder / "activations" / f"batch-{b}.jsonl.gz",
                    _activations(sae, store, row, batch, examples, clips, cfg, row.model, created), gz=True)
        write_jsonl(folder / "explanations" / f"batch-{b}.jsonl.gz",
                    [explanation_record(row.model, sid, f.feature, f.name, f.description, prov.explainer, cfg, created)
                     for f in batch if f.name and f.name.strip()], gz=True)
    return folder


def export_neuronpedia(run: RunConfig, out: Path, cfg: NeuronpediaExport, sae_ids: Sequence[str] = (),
                       created: dt.datetime | None = None) -> list[Path]:
    """Every SAE of the catalog (or ``sae_ids``) in Neuronpedia's layout under ``out``."""
    created = created or dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None)
    store = ActivationStore(run.run.out_dir / "activations")
    with Catalog.open(run.run.catalog_path, read_only=True) as cat:
        saes = [s for s in cat.saes() if not sae_ids or s.sae_id in sae_ids]
        missing = sorted(set(sae_ids) - {s.sae_id for s in saes})
        if missing or not saes:
            raise ConfigError(f"SAE(s) {missing or 'any'} not in the catalog (have {[s.sae_id for s in cat.saes()]})")
        prov = provenance(run, cat)
        return [export_sae(cat, store, row, out, cfg, prov, created) for row in saes]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="neuronpedia: Neuronpedia's import layout (JSONL.gz batches); parquet: every catalog table")
    p.add_argument("--out", required=True, type=Path, help="folder to write into")
    p.add_argument("--sae", action="append", default=[], metavar="SAE_ID",
                   help="neuronpedia: only this SAE (repeatable; default every SAE)")
    defaults = NeuronpediaExport()
    p.add_argument("--release", default=defaults.release, help="neuronpedia: release id (default ard-MODEL)")
    p.add_argument("--release-title", default=defaults.release_title, help="neuronpedia: the release's title")
    p.add_argument("--creator-name", default=defaults.creator_name, help="neuronpedia: the creator's name")
    p.add_argument("--creator-id", default=defaults.creator_id,
                   help="neuronpedia: the importing instance's user id (default: neuronpedia-utils' default creator)")
    p.add_argument("--url", default=defaults.url, help="neuronpedia: a link for the release")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="neuronpedia: features per batch file")


def main(args: argparse.Namespace) -> int:
    run = load_config(args)
    if args.format == "parquet":
        with Catalog.open(run.run.catalog_path, read_only=True) as cat:
            files = cat.export_parquet(args.out)
        print(f"wrote {len(files)} tables to {args.out}: {', '.join(f.stem for f in files)}")
        return 0
    try:
        cfg = NeuronpediaExport(args.release, args.release_title, args.creator_name, args.creator_id, args.url,
                                args.batch_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    folders = export_neuronpedia(run, args.out, cfg, args.sae)
    print(f"wrote {len(folders)} Neuronpedia source folder(s) under {args.out}: "
          + ", ".join(str(f.relative_to(args.out)) for f in folders))
    return 0
