"""Probing datasets: the clip record, the manifest format, and loaders.

Every dataset, the embedded mini corpus and the real ones (WavCaps, IEMOCAP,
FSD50K, SAKURA, AudioBench), comes out as a list of :class:`ClipRecord`, so the
stages downstream never care where clips came from. ``manifest`` holds the
record and the CSV/Parquet format; ``loaders`` parses each real dataset's own
metadata into records.
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
