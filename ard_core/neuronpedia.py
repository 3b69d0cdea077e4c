"""The catalog in Neuronpedia's import layout (what ``neuronpedia-utils`` exports and imports).

One folder per SAE, ``OUT/MODEL/SOURCE_ID/``, with ``SOURCE_ID = LAYER-SET`` (e.g. ``4-ard-res-e8``):
``release.jsonl``, ``model.jsonl``, ``sourceset.jsonl``, ``source.jsonl`` (one record each) and
``features/``, ``activations/``, ``explanations/`` holding ``batch-N.jsonl.gz`` files, one JSON
object per line, features in batches of ``batch_size`` by index (activations and explanations
in the same batches as their features). Field names and order follow the dataclasses of
neuronpedia's ``utils/neuronpedia-utils/neuronpedia_utils/db_models/`` (``Feature``,
``Activation``, ``Explanation``, ``Source``, ``SourceSet``, ``Model``, ``SourceRelease``).

Audio instead of text: an activation record is one of the feature's top clips, its
``tokens`` the start times of the clip's audio tokens ("0.40s"), its ``values`` the feature's
activation on each, and its ``dataSource`` the clip id. ``docs/exports.md`` has the whole mapping.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

DEFAULT_CREATOR_ID = "clkht01d40000jv08hvalcvly"
"""The creator id neuronpedia-utils' scripts fall back to (its default instance user)."""

FEATURE_FIELDS = (
    "modelId", "layer", "index", "creatorId", "createdAt", "maxActApprox", "hasVector", "vector", "vectorLabel",
    "vectorDefaultSteerStrength", "hookName", "topkCosSimIndices", "topkCosSimValues", "neuron_alignment_indices",
    "neuron_alignment_values", "neuron_alignment_l1", "correlated_neurons_indices", "correlated_neurons_pearson",
    "correlated_neurons_l1", "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1",
    "neg_str", "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_heights",
    "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
    "decoder_weights_dist")
ACTIVATION_FIELDS = (
    "id", "tokens", "index", "layer", "modelId", "maxValue", "maxValueTokenIndex", "minValue", "values", "creatorId",
    "dataSource", "dataIndex", "dfaValues", "dfaTargetIndex", "dfaMaxValue", "createdAt", "lossValues",
    "logitContributions", "binMin", "binMax", "binContains", "qualifyingTokenIndex")
EXPLANATION_FIELDS = (
    "id", "modelId", "layer", "index", "description", "authorId", "embedding", "triggeredById", "typeName",
    "explanationModelName", "notes", "createdAt")


@dataclass
class NeuronpediaExport:
    """Who and what the export names (``python -m precompute export --format neuronpedia``)."""

    release: str = ""
    """Release id (letters, digits, dashes); empty: 'ard-MODEL'."""
    release_title: str = ""
    """Human-readable title of the release; empty: one made from the model's name."""
    creator_name: str = "AR&D workbench"
    """Shown as the release's and source set's creator."""
    creator_id: str = DEFAULT_CREATOR_ID
    """The importing instance's user id the records belong to."""
    url: str = ""
    """A link for the release (paper, repository); empty: none."""
    batch_size: int = 1024
    """Features per batch file (neuronpedia-utils' export uses 1024)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.release and not all(c.isalnum() or c == "-" for c in self.release):
            raise ValueError(f"release {self.release!r}: use letters, digits and dashes only")


def set_name(expansion: int) -> str:
    """The source set of one expansion factor: every layer's SAE of that width."""
    return f"ard-res-e{expansion}"


def source_id(layer: int, expansion: int) -> str:
    """Neuronpedia's id of one SAE: LAYER-SET."""
    return f"{layer}-{set_name(expansion)}"


def record_id(*parts: object) -> str:
    """A deterministic id shaped like the cuid2 ids neuronpedia uses (25 lower-case letters and digits)."""
    digest = int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest(), "big")
    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while len(out) < 24:
        digest, r = divmod(digest, 36)
        out += chars[r]
    return "c" + out


def token_labels(times: Sequence[float]) -> list[str]:
    """Audio tokens as Neuronpedia tokens: each one's start time, e.g. '0.40s'."""
    return [f"{float(t):.2f}s" for t in times]


def _iso(when: dt.datetime) -> str:
    return when.isoformat()


def feature_record(model: str, source: str, index: int, max_act: float | None, density: float | None,
                   hook_name: str, steer_value: float | None, cos_indices: Sequence[int],
                   cos_values: Sequence[float], cfg: NeuronpediaExport, created: dt.datetime) -> dict[str, Any]:
    """A ``Feature`` record: its largest activation in scoring, density, decoder-cosine neighbours."""
    values = dict.fromkeys(FEATURE_FIELDS)
    values.update({f: [] for f in FEATURE_FIELDS if f.endswith(("_indices", "_values", "_l1", "_pearson", "_str",
                                                                "_heights", "_dist")) or f == "vector"})
    values.update(modelId=model, layer=source, index=str(index), creatorId=cfg.creator_id, createdAt=_iso(created),
                  maxActApprox=float(max_act or 0.0), hasVector=False, vectorLabel=None,
                  vectorDefaultSteerStrength=float(steer_value) if steer_value is not None else 10.0,
                  hookName=hook_name, topkCosSimIndices=[int(i) for i in cos_indices],
                  topkCosSimValues=[round(float(v), 6) for v in cos_values], frac_nonzero=float(density or 0.0))
    return values


def activation_record(model: str, source: str, index: int, clip_id: str, rank: int, times: Sequence[float],
                      acts: Sequence[float], cfg: NeuronpediaExport, created: dt.datetime) -> dict[str, Any]:
    """An ``Activation`` record: one top clip, its audio tokens' start times and the feature's value on each."""
    values = [round(float(a), 5) for a in acts]
    top = int(np.argmax(values)) if values else 0
    return {"id": record_id(model, source, index, clip_id), "tokens": token_labels(times), "index": str(index),
            "layer": source, "modelId": model, "maxValue": max(values, default=0.0), "maxValueTokenIndex": top,
            "minValue": min(values, default=0.0), "values": values, "creatorId": cfg.creator_id,
            "dataSource": clip_id, "dataIndex": str(rank), "dfaValues": [], "dfaTargetIndex": None,
            "dfaMaxValue": None, "createdAt": _iso(created), "lossValues": [], "logitContributions": None,
            "binMin": None, "binMax": None, "binContains": None, "qualifyingTokenIndex": top}


def explanation_record(model: str, source: str, index: int, name: str, description: str | None,
                       explainer: str | None, cfg: NeuronpediaExport, created: dt.datetime) -> dict[str, Any]:
    """An ``Explanation`` record: the feature's name, its longer description as the notes."""
    return {"id": record_id(model, source, index, "explanation"), "modelId": model, "layer": source,
            "index": str(index), "description": name, "authorId": cfg.creator_id, "embedding": None,
            "triggeredById": None, "typeName": "ard-clip-captions", "explanationModelName": explainer,
            "notes": description or None, "createdAt": _iso(created)}


def source_records(model: str, layer: int, expansion: int, n_layers: int, d_model: int, n_clips: int,
                   datasets: Sequence[str], cfg: NeuronpediaExport, created: dt.datetime) -> dict[str, dict[str, Any]]:
    """file name -> its one record: release.jsonl, model.jsonl, sourceset.jsonl, source.jsonl."""
    release = cfg.release or f"ard-{model}"
    title = cfg.release_title or f"AR&D audio concepts of {model}"
    sset, sid = set_name(expansion), source_id(layer, expansion)
    return {
        "release.jsonl": {"name": release, "description": title, "creatorName": cfg.creator_name,
                          "creatorId": cfg.creator_id, "visibility": "PUBLIC", "isNewUi": False, "featured": False,
                          "descriptionShort": title, "urls": [cfg.url] if cfg.url else [], "creatorEmail": None,
                          "creatorNameShort": cfg.creator_name, "defaultSourceSetName": sset,
                          "defaultSourceId": sid, "defaultUmapSourceIds": [], "createdAt": _iso(created)},
        "model.jsonl": {"id": model, "instruct": True, "creatorId": cfg.creator_id, "displayNameShort": model,
                        "displayName": model, "tlensId": None, "dimension": d_model, "visibility": "PUBLIC",
                        "defaultSourceSetName": sset, "defaultSourceId": sid, "inferenceEnabled": False,
                        "layers": n_layers, "neuronsPerLayer": d_model, "createdAt": _iso(created), "owner": "",
                        "updatedAt": _iso(created), "website": cfg.url or None},
        "sourceset.jsonl": {"modelId": model, "name": sset, "creatorId": cfg.creator_id, "hasDashboards": True,
                            "visibility": "PUBLIC", "description": f"Residual stream, TopK SAE x{expansion} (audio)",
                            "type": "", "creatorName": cfg.creator_name, "urls": [cfg.url] if cfg.url else [],
                            "creatorEmail": None, "releaseName": release, "defaultOfModelId": None,
                            "defaultRange": 1, "defaultShowBreaks": True, "showDfa": False, "showCorrelated": False,
                            "showHeadAttribution": False, "showUmap": False, "createdAt": _iso(created)},
        "source.jsonl": {"id": sid, "modelId": model, "setName": sset, "creatorId": cfg.creator_id,
                         "hasDashboards": True, "inferenceEnabled": False, "inferenceHosts": [],
                         "saelensConfig": None, "saelensRelease": None, "saelensSaeId": None, "hfRepoId": None,
                         "hfFolderId": None, "visibility": "PUBLIC", "defaultOfModelId": None, "hasUmap": False,
                         "hasUmapLogSparsity": False, "hasUmapClusters": False, "num_prompts": n_clips,
                         "num_tokens_in_prompt": None, "dataset": ", ".join(datasets) or None,
                         "notes": "audio: each activation's tokens are its clip's audio tokens, named by start time; "
                                  "dataSource is the clip id", "createdAt": _iso(created)},
    }


def write_jsonl(path: Path, records: Iterable[dict[str, Any]], gz: bool) -> Path:
    """One JSON object per line (gzip-compressed for the batch files), written to a temp name then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    tmp.write_bytes(gzip.compress(text, compresslevel=5, mtime=0) if gz else text)
    tmp.replace(path)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a ``.jsonl`` or ``.jsonl.gz`` file."""
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
