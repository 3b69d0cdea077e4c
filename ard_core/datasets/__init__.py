"""Probing datasets: the clip record, the manifest format, corpus verification, and loaders.

Every dataset, the embedded mini corpus and the real ones (WavCaps, IEMOCAP,
FSD50K, SAKURA, AudioBench), comes out as a list of :class:`ClipRecord`, so the
stages downstream never care where clips came from. ``manifest`` holds the
record and the CSV/Parquet format; ``corpus`` checks a built mini corpus
against its own build record (building it is ``python -m forge corpus``);
``loaders`` parses each real dataset's own metadata into records, with the
helpers they share in ``metadata``.
"""

from ard_core.datasets.manifest import (
    LABEL_VOCAB,
    MANIFEST_COLUMNS,
    SPLITS,
    TRACKS,
    ClipRecord,
    load_manifest,
    manifest_hash,
    save_manifest,
)

__all__ = [
    "LABEL_VOCAB",
    "MANIFEST_COLUMNS",
    "SPLITS",
    "TRACKS",
    "ClipRecord",
    "load_manifest",
    "manifest_hash",
    "save_manifest",
]
