"""What every tab's handlers share: services, not logic.

:class:`AppContext` holds the read-only catalog (whose named reads answer every
question a page asks), the annotations store, the activation store, SAEs and
clip spectrograms (loaded on first use, cached), and the model loaded once at start.

No gradio here: handlers are plain functions of an :class:`AppContext` and their
inputs, so tests call them directly on a fixture catalog.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Hashable, TypeVar

from ard_core.audio import AudioLimits
from ard_core.auth import Users
from ard_core.catalog import AnnotationStore, Catalog, FeatureRef, annotations_path_for, parse_feature_ref

if TYPE_CHECKING:  # pragma: no cover
    from ard_core.sae import TopKSAE
    from ard_core.store import ActivationStore

V = TypeVar("V")

log = logging.getLogger(__name__)

DEFAULT_CLAP = Path("assets/models/tiny-clap")
"""CLAP model for the annotation summary when none is given (the shipped tiny CLAP)."""


class UserError(ValueError):
    """A problem the user can fix (bad reference, missing input); shown as a message, never a traceback."""


class LruCache(Generic[V]):
    """A small least-recently-used cache shared by request threads.

    The value is made outside the lock, so a slow ``make`` (an SAE encode) never holds
    up other requests; two threads may then both make the same value, and one wins.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass
class AppContext:
    """The app's services; ``AppContext.open`` builds one from a catalog path."""

    catalog_path: Path
    catalog: Catalog
    """Opened read-only: the app never writes it. Safe to share between request threads."""
    annotations: AnnotationStore
    store: "ActivationStore | None" = None
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
    spectrograms: LruCache = field(default_factory=lambda: LruCache(128), repr=False)
    """Clip path -> its mel spectrogram (a feature page draws up to 2 x max_examples)."""
    samples: LruCache = field(default_factory=lambda: LruCache(16), repr=False)
    """SAE id -> its activation sample (ard_core.traces) for the activation histogram."""
    densities: LruCache = field(default_factory=lambda: LruCache(16), repr=False)
    """SAE id -> every listed feature's density (the catalog is read-only, so they never change)."""
    users: Users | None = None
    """The logins of ``--auth FILE`` (None: no login; annotators type their name)."""
    _sae_cache: dict = field(default_factory=dict, repr=False)
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
        users: Users | None = None,
    ) -> "AppContext":
        """Open the catalog read-only (a hard requirement: the app never writes it)."""
        from ard_core.config import resolve_device

        catalog_path = Path(catalog_path)
        cat = Catalog.open(catalog_path, read_only=True)
        ann = AnnotationStore(annotations_path or annotations_path_for(catalog_path))
        ctx = cls(catalog_path, cat, ann, device=resolve_device(device), max_examples=max_examples,
                  bertscore_path=bertscore, audio_limits=audio_limits or AudioLimits(), users=users)
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
            row = self.catalog.primary_model()
            if row is None:
                self.model_note = ("No model loaded: the catalog lists no model. Start the app with "
                                   "`--model PATH_OR_HUB_ID` to steer.")
                return
            model = self.catalog.resolve(row.path) or row.path
        try:
            self.llm = load_audiollm(str(model), device=self.device)
            self.model_note = f"Model **{self.llm.name}** loaded on {self.device}."
        except Exception as exc:
            self.llm = None
            self.model_note = (f"No model loaded: {str(model)!r} could not be loaded ({exc}). Start the app with "
                               "`--model PATH_OR_HUB_ID` to steer.")
            log.warning(self.model_note)

    # -- heavy objects, loaded on first use -----------------------------------------------------
    def sae(self, sae_id: str, device: str | None = None) -> "TopKSAE":
        """The TopKSAE of ``sae_id`` (cached; on the model's device for steering, else CPU)."""
        from ard_core.sae import TopKSAE

        device = device or "cpu"
        key = (sae_id, device)
        with self._lock:
            if key not in self._sae_cache:
                row = self.catalog.sae(sae_id)
                folder = self.catalog.resolve(row.path)
                if folder is None:
                    raise UserError(f"SAE {sae_id}: its folder {row.path!r} does not exist on this machine")
                self._sae_cache[key] = TopKSAE.load(folder, device=device).eval()
            return self._sae_cache[key]

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


def parse_ref(ref: str) -> FeatureRef:
    """parse_feature_ref with a user-facing error."""
    try:
        return parse_feature_ref(str(ref or ""))
    except ValueError as exc:
        raise UserError(str(exc)) from exc
