"""What every tab's handlers share: the read-only catalog, the annotations store,
the activation store, SAEs (loaded on first use), and the model loaded once at start.

No gradio here: handlers are plain functions of an :class:`AppContext` and their
inputs, so tests call them directly on a fixture catalog.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ard_core.audio import AudioLimits
from ard_core.catalog import AnnotationStore, Catalog, ClipRow, FeatureRow, SaeRow, annotations_path_for, parse_feature_ref

log = logging.getLogger(__name__)

DEFAULT_CLAP = Path("assets/models/tiny-clap")
"""CLAP model for the annotation summary when none is given (the shipped tiny CLAP)."""


class UserError(ValueError):
    """A problem the user can fix (bad reference, missing input); shown as a message, never a traceback."""


@dataclass
class AppContext:
    catalog_path: Path
    catalog: Catalog
    annotations: AnnotationStore
    store: Any | None = None
    """ActivationStore beside the catalog, or None (activation plots then say why)."""
    store_note: str = ""
    llm: Any | None = None
    """The AudioLLM loaded at start-up, or None (the Steer tab then says why)."""
    model_note: str = ""
    device: str = "cpu"
    clap_path: str | None = None
    bertscore_path: str | None = None
    max_examples: int = 6
    """Example slots per kind (top / bottom) on a feature page."""
    hist_token_budget: int = 8192
    """Tokens sampled from the store for a feature's activation histogram."""
    audio_limits: AudioLimits = field(default_factory=AudioLimits)
    """What an uploaded clip may be (size, length, channels, rate); also Gradio's upload limit."""
    _sae_cache: dict = field(default_factory=dict, repr=False)
    _sample_cache: "OrderedDict[str, Any]" = field(default_factory=OrderedDict, repr=False)
    _spec_cache: "OrderedDict[str, Any]" = field(default_factory=OrderedDict, repr=False)
    _density_cache: "OrderedDict[str, Any]" = field(default_factory=OrderedDict, repr=False)
    _clap: Any = field(default=None, repr=False)
    _bert: Any = field(default=None, repr=False)
    _clap_error: str = field(default="", repr=False)
    _bert_error: str = field(default="", repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    model_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Held while the model runs: steering hooks must never see another request's forward."""

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        catalog_path: str | Path,
        model: str | None = None,
        *,
        load_model: bool = True,
        annotations_path: str | Path | None = None,
        device: str = "auto",
        clap: str | None = None,
        bertscore: str | None = None,
        max_examples: int = 6,
        audio_limits: AudioLimits | None = None,
    ) -> "AppContext":
        """Open the catalog read-only (a hard requirement: the app never writes it)."""
        from ard_core.config import resolve_device

        catalog_path = Path(catalog_path)
        cat = Catalog.open(catalog_path, read_only=True)
        ann = AnnotationStore(annotations_path or annotations_path_for(catalog_path))
        ctx = cls(catalog_path, cat, ann, device=resolve_device(device), max_examples=max_examples,
                  bertscore_path=bertscore, audio_limits=audio_limits or AudioLimits())
        ctx.clap_path = clap if clap is not None else (str(DEFAULT_CLAP) if (DEFAULT_CLAP / "config.json").is_file() else None)
        ctx._open_store()
        if load_model:
            ctx._load_model(model)
        else:
            ctx.model_note = "No model loaded (the app was started without one)."
        return ctx

    def close(self) -> None:
        self.annotations.close()
        self.catalog.close()

    def _open_store(self) -> None:
        root = self.catalog_path.parent / "activations"
        if not (root / "meta.json").is_file():
            self.store_note = f"no activation store at {root}; activation plots need the extract stage's output"
            return
        try:
            from ard_core.store import ActivationStore

            self.store = ActivationStore(root)
        except Exception as exc:  # a half-written store must not stop the app
            self.store_note = f"activation store {root} could not be read: {exc}"
            log.warning(self.store_note)

    def _load_model(self, model: str | None) -> None:
        from ard_core.models import load_audiollm

        if model is None:
            rows = self.query("SELECT m.path, m.model, (SELECT count(*) FROM saes s WHERE s.model = m.model) AS n "
                              "FROM models m ORDER BY n DESC, m.model")
            if not rows:
                self.model_note = ("No model loaded: the catalog lists no model. Start the app with "
                                   "`--model PATH_OR_HUB_ID` to steer.")
                return
            model = self.resolve(rows[0]["path"]) or rows[0]["path"]
        try:
            self.llm = load_audiollm(str(model), device=self.device)
            self.model_note = f"Model **{self.llm.name}** loaded on {self.device}."
        except Exception as exc:
            self.llm = None
            self.model_note = (f"No model loaded: {str(model)!r} could not be loaded ({exc}). Start the app with "
                               "`--model PATH_OR_HUB_ID` to steer.")
            log.warning(self.model_note)

    # -- catalog access ----------------------------------------------------------------
    @contextmanager
    def cat(self) -> Iterator[Catalog]:
        """A catalog view on its own cursor: DuckDB connections are not shared between threads."""
        cur = self.catalog.con.cursor()
        try:
            yield Catalog(cur, self.catalog_path, read_only=True)
        finally:
            cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.cat() as c:
            return c.query(sql, params)

    def rows(self, kind: type, where: str = "", params: Sequence[Any] = (), order_by: str = "") -> list[Any]:
        with self.cat() as c:
            return c.rows(kind, where, params, order_by)

    def has_table(self, table: str) -> bool:
        with self.cat() as c:
            return table in c.tables()

    def resolve(self, path: str | Path | None) -> Path | None:
        """An existing file/folder for a catalog path: absolute, or relative to the cwd or the run's parents."""
        if not path:
            return None
        p = Path(path)
        if p.is_absolute():
            return p if p.exists() else None
        base = self.catalog_path.resolve().parent
        for root in (Path.cwd(), base, *base.parents):
            if (root / p).exists():
                return root / p
        return None

    # -- lookups -------------------------------------------------------------------------
    def feature_page(self, ref: str) -> dict[str, Any]:
        """The feature's row of ``feature_pages``: its FeatureRow columns, prev_feature,
        next_feature and its 'ard' examples. One lookup by a one-column key, which DuckDB
        answers from an index; (sae_id, feature) filters scan the whole table."""
        fr = parse_ref(ref)
        rows = self.query("SELECT * FROM feature_pages WHERE ref = ?", [str(fr)])
        if not rows:
            sae = self.rows(SaeRow, "sae_id = ?", [fr.sae_id])
            if not sae:
                known = ", ".join(r["sae_id"] for r in self.query("SELECT sae_id FROM saes ORDER BY sae_id")) or "none"
                raise UserError(f"no SAE {fr.sae_id!r} in this catalog (SAEs: {known})")
            raise UserError(f"feature {fr} is not in the catalog (the SAE has features 0..{sae[0].d_sae - 1}; "
                            "features without scores are not listed)")
        return rows[0]

    def feature_row(self, ref: str) -> FeatureRow:
        return feature_row_of(self.feature_page(ref))

    def sae_row(self, sae_id: str) -> SaeRow:
        rows = self.rows(SaeRow, "sae_id = ?", [sae_id])
        if not rows:
            raise UserError(f"no SAE {sae_id!r} in this catalog")
        return rows[0]

    def clip(self, clip_id: str) -> ClipRow | None:
        rows = self.rows(ClipRow, "clip_id = ?", [clip_id])
        return rows[0] if rows else None

    def clips(self, clip_ids: Sequence[str]) -> dict[str, ClipRow]:
        """The catalog's rows of ``clip_ids`` (absent ids are left out), in one query."""
        if not clip_ids:
            return {}
        return {c.clip_id: c for c in self.rows(ClipRow, "clip_id = ANY(?)", [list(clip_ids)])}

    def clip_path(self, clip: ClipRow) -> Path | None:
        return self.resolve(clip.path)

    def allowed_paths(self) -> list[str]:
        """The folders holding the catalog's clips: the only files the web server may serve."""
        dirs = set()
        for r in self.query("SELECT DISTINCT path FROM clips"):
            p = self.resolve(r["path"])
            if p is not None:
                dirs.add(str(p.parent.resolve()))
        # collapse nested folders to their top-most member, keeping the list short
        out: list[str] = []
        for d in sorted(dirs, key=len):
            if not any(d == o or d.startswith(o.rstrip("/") + "/") for o in out):
                out.append(d)
        return sorted(out)

    def blocked_paths(self) -> list[str]:
        """Files never served even when a clip folder holds them: the catalog, annotations and activation store."""
        run = self.catalog_path.resolve().parent
        out = [self.catalog_path.resolve(), self.annotations.path.resolve(), run / "activations"]
        out += [p.with_name(p.name + ".wal") for p in out[:2]]
        return [str(p) for p in out]

    # -- heavy objects, loaded on first use -----------------------------------------------------
    def sae(self, sae_id: str, device: str | None = None):
        """The TopKSAE of ``sae_id`` (cached; on the model's device for steering, else CPU)."""
        from ard_core.sae import TopKSAE

        device = device or "cpu"
        key = (sae_id, device)
        with self._lock:
            if key not in self._sae_cache:
                row = self.sae_row(sae_id)
                folder = self.resolve(row.path)
                if folder is None:
                    raise UserError(f"SAE {sae_id}: its folder {row.path!r} does not exist on this machine")
                self._sae_cache[key] = TopKSAE.load(folder, device=device).eval()
            return self._sae_cache[key]

    def cached(self, cache: "OrderedDict[str, Any]", key: str, make, limit: int = 64):  # noqa: ANN001, ANN201
        """A small LRU cache shared by request threads."""
        with self._lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        value = make()
        with self._lock:
            cache[key] = value
            while len(cache) > limit:
                cache.popitem(last=False)
        return value

    def clap(self):  # noqa: ANN201
        """The CLAP text embedder for the annotation summary, or None with ``clap_note``."""
        if self._clap is None and self.clap_path:
            from ard_core.clap import load_clap

            try:
                self._clap = load_clap("hf", self.clap_path)
            except Exception as exc:
                log.warning("CLAP model %s could not be loaded: %s", self.clap_path, exc)
                self.clap_path = None
                self._clap_error = str(exc)
        return self._clap

    @property
    def clap_note(self) -> str:
        if self._clap_error:
            return f"the CLAP model could not be loaded ({self._clap_error})"
        return "no CLAP model on this machine (start the app with --clap PATH)"

    def bert(self):  # noqa: ANN201
        if self._bert is None and self.bertscore_path:
            from ard_core.agreement import BertScorer

            try:
                self._bert = BertScorer.load(self.bertscore_path)
            except Exception as exc:
                log.warning("BERTScore model %s could not be loaded: %s", self.bertscore_path, exc)
                self._bert_error = str(exc)
                self.bertscore_path = None
        return self._bert

    @property
    def bert_note(self) -> str:
        if self._bert_error:
            return f"the BERTScore model could not be loaded ({self._bert_error})"
        return ("no BERTScore model on this machine (its usual model, roberta-large, is a hub download); "
                "start the app with --bertscore PATH to a local encoder folder")


def feature_row_of(page: dict[str, Any]) -> FeatureRow:
    """The FeatureRow columns of a ``feature_pages`` row (:meth:`AppContext.feature_page`)."""
    return FeatureRow(**{f.name: page[f.name] for f in dataclasses.fields(FeatureRow)})


def parse_ref(ref: str) -> Any:
    """parse_feature_ref with a user-facing error."""
    try:
        return parse_feature_ref(str(ref or ""))
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    ax = abs(x)
    if ax != 0 and (ax < 10 ** -digits or ax >= 1e5):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}f}"
