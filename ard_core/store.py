"""The activation store: residual-stream activations on disk, sharded, float16.

Layout (``root`` is usually ``runs/NAME/activations``)::

    root/meta.json                    model, layers, d_model, positions, dtype
    root/shard_00000/layer_05.npy     (n_tokens, d_model) float16, memmap-able
    root/shard_00000/index.parquet    clip_id, layer, offset, n_tokens  (queryable by DuckDB)
    root/shard_00000/positions_05.npy (n_tokens,) int32: token index inside the clip's span
    root/shard_00000/failed.json      clips that could not be loaded, with the reason

A shard is written into ``shard_XXXXX.tmp/`` and renamed to ``shard_XXXXX/`` only
when every file in it is complete. Rename is atomic, so a shard directory without
the ``.tmp`` suffix is always whole, and a killed run leaves at most a ``.tmp``
directory that the next run deletes and redoes.

DuckDB can read the index directly:
``SELECT layer, count(*), sum(n_tokens) FROM 'root/shard_*/index.parquet' GROUP BY layer``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ard_core.durable import fsync_dir, fsync_file, write_text

SHARD_PREFIX = "shard_"


def shard_name(i: int) -> str:
    return f"{SHARD_PREFIX}{i:05d}"


def layer_file(layer: int) -> str:
    return f"layer_{layer:02d}.npy"


def positions_file(layer: int) -> str:
    return f"positions_{layer:02d}.npy"


@dataclass
class StoreMeta:
    """What every shard of a store shares; saved as ``meta.json``."""

    model: str
    """Model name or path the activations came from."""
    layers: list[int]
    """0-based decoder layer indices (layer l = HF ``hidden_states[l + 1]``, pre-final-norm)."""
    d_model: int
    """Hidden size of the residual stream."""
    positions: str = "audio"
    """Which token positions are stored: 'audio' (audio tokens only) or 'all'."""
    dtype: str = "float16"
    """On-disk dtype of the activations: 'float16' or 'float32'."""
    drop_sinks: bool = False
    """Whether high-norm 'attention sink' tokens were dropped."""
    sink_norm_factor: float = 10.0
    """A token is a sink when its norm exceeds this factor times its clip's median norm."""
    prompt: str = ""
    """The prompt text the clips were run with."""
    extra: dict = field(default_factory=dict)
    """Free-form provenance (config copy, versions)."""


class IndexRow(NamedTuple):
    clip_id: str
    layer: int
    offset: int
    n_tokens: int


class ActivationWriter:
    """Writes one shard at a time; call :meth:`add` per clip, then :meth:`commit`."""

    def __init__(self, root: Path, meta: StoreMeta) -> None:
        self.root = Path(root)
        self.meta = meta
        self.root.mkdir(parents=True, exist_ok=True)
        meta_path = self.root / "meta.json"
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            for key in ("model", "layers", "d_model", "positions", "drop_sinks"):
                if old.get(key) != getattr(meta, key):
                    raise ValueError(
                        f"activation store {self.root} was written with {key}={old.get(key)!r}, "
                        f"this run has {getattr(meta, key)!r}; use another out_dir or delete the store"
                    )
        else:
            write_text(meta_path, json.dumps(meta.__dict__, indent=2, default=str))
        self._reset()

    def _reset(self) -> None:
        self._acts: dict[int, list[np.ndarray]] = {l: [] for l in self.meta.layers}
        self._pos: dict[int, list[np.ndarray]] = {l: [] for l in self.meta.layers}
        self._rows: list[IndexRow] = []
        self._offsets: dict[int, int] = {l: 0 for l in self.meta.layers}
        self._failed: list[dict] = []

    def is_done(self, shard: int) -> bool:
        return (self.root / shard_name(shard)).is_dir()

    def add(self, clip_id: str, layer: int, acts: np.ndarray, positions: np.ndarray) -> None:
        """acts: (T, d_model); positions: (T,) token index within the clip's span."""
        if acts.ndim != 2 or acts.shape[1] != self.meta.d_model:
            raise ValueError(f"clip {clip_id!r} layer {layer}: expected (T, {self.meta.d_model}), got {acts.shape}")
        self._acts[layer].append(np.asarray(acts, dtype=self.meta.dtype))
        self._pos[layer].append(np.asarray(positions, dtype=np.int32))
        self._rows.append(IndexRow(clip_id, layer, self._offsets[layer], int(acts.shape[0])))
        self._offsets[layer] += int(acts.shape[0])

    def add_failure(self, clip_id: str, reason: str) -> None:
        self._failed.append({"clip_id": clip_id, "reason": reason})

    def commit(self, shard: int) -> Path:
        """Write the buffered clips as shard ``shard`` atomically and start a new one."""
        final = self.root / shard_name(shard)
        tmp = self.root / (shard_name(shard) + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        d = self.meta.d_model
        for layer in self.meta.layers:
            acts = np.concatenate(self._acts[layer]) if self._acts[layer] else np.zeros((0, d), self.meta.dtype)
            pos = np.concatenate(self._pos[layer]) if self._pos[layer] else np.zeros((0,), np.int32)
            np.save(tmp / layer_file(layer), acts)
            np.save(tmp / positions_file(layer), pos)
        table = pa.table({
            "clip_id": pa.array([r.clip_id for r in self._rows], pa.string()),
            "layer": pa.array([r.layer for r in self._rows], pa.int32()),
            "offset": pa.array([r.offset for r in self._rows], pa.int64()),
            "n_tokens": pa.array([r.n_tokens for r in self._rows], pa.int32()),
        })
        pq.write_table(table, tmp / "index.parquet")
        (tmp / "failed.json").write_text(json.dumps(self._failed, indent=1))
        for f in tmp.iterdir():  # the data must be on disk before the rename publishes it
            fsync_file(f)
        os.replace(tmp, final)
        fsync_dir(self.root)  # the rename itself must be durable before anything vouches for the shard
        self._reset()
        return final


class ActivationStore:
    """Read side of the store. Only complete shards are visible."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no activation store at {self.root} (missing meta.json); run the extract stage")
        raw = json.loads(meta_path.read_text())
        known = StoreMeta.__dataclass_fields__
        self.meta = StoreMeta(**{k: v for k, v in raw.items() if k in known})
        self.shards = sorted(
            p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(SHARD_PREFIX) and not p.name.endswith(".tmp")
        )
        self._index: dict[int, list[tuple[IndexRow, Path]]] | None = None
        self._by_clip: dict[tuple[int, str], tuple[IndexRow, Path]] | None = None

    @property
    def layers(self) -> list[int]:
        return list(self.meta.layers)

    @property
    def d_model(self) -> int:
        return int(self.meta.d_model)

    def _check_layer(self, layer: int) -> None:
        if layer not in self.meta.layers:
            raise KeyError(f"layer {layer} is not in the store (layers: {self.meta.layers})")

    def _load_index(self) -> dict[int, list[tuple[IndexRow, Path]]]:
        if self._index is None:
            index: dict[int, list[tuple[IndexRow, Path]]] = {l: [] for l in self.meta.layers}
            for shard in self.shards:
                t = pq.read_table(shard / "index.parquet").to_pydict()
                for c, l, o, n in zip(t["clip_id"], t["layer"], t["offset"], t["n_tokens"]):
                    index[int(l)].append((IndexRow(c, int(l), int(o), int(n)), shard))
            self._index = index
        return self._index

    def _lookup(self, layer: int, clip_id: str) -> tuple[IndexRow, Path]:
        if self._by_clip is None:
            self._by_clip = {(l, row.clip_id): (row, shard) for l, rows in self._load_index().items()
                             for row, shard in rows}
        try:
            return self._by_clip[(layer, clip_id)]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in the store at layer {layer}") from None

    def index(self, layer: int) -> list[IndexRow]:
        self._check_layer(layer)
        return [row for row, _ in self._load_index()[layer]]

    def index_with_shards(self, layer: int) -> list[tuple[IndexRow, str]]:
        """Index rows of ``layer`` with the name of the shard holding each."""
        self._check_layer(layer)
        return [(row, shard.name) for row, shard in self._load_index()[layer]]

    def clip_ids(self) -> list[str]:
        return [r.clip_id for r in self.index(self.meta.layers[0])]

    def failures(self) -> list[dict]:
        out: list[dict] = []
        for shard in self.shards:
            out.extend(json.loads((shard / "failed.json").read_text()))
        return out

    def n_tokens(self, layer: int) -> int:
        return sum(r.n_tokens for r in self.index(layer))

    def shard_array(self, shard: Path, layer: int) -> np.ndarray:
        """(n_tokens, d) memmap of one shard, in the store's dtype."""
        return np.load(shard / layer_file(layer), mmap_mode="r")

    def load_layer(self, layer: int) -> np.ndarray:
        """All tokens of ``layer`` in index order, (n_tokens, d) float16."""
        self._check_layer(layer)
        parts = [self.shard_array(s, layer) for s in self.shards]
        if not parts:
            return np.zeros((0, self.d_model), self.meta.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def clip_tokens(self, layer: int, clip_id: str) -> np.ndarray:
        """(T, d) activations of one clip, in the store's dtype."""
        row, shard = self._lookup(layer, clip_id)
        return np.array(self.shard_array(shard, layer)[row.offset : row.offset + row.n_tokens])

    def clip_positions(self, layer: int, clip_id: str) -> np.ndarray:
        row, shard = self._lookup(layer, clip_id)
        pos = np.load(shard / positions_file(layer), mmap_mode="r")
        return np.array(pos[row.offset : row.offset + row.n_tokens])

    def iter_clips(self, layer: int) -> Iterator[tuple[str, np.ndarray]]:
        """(clip_id, (T, d) float16) in index order, one shard in memory at a time."""
        self._check_layer(layer)
        for shard in self.shards:
            arr = self.shard_array(shard, layer)
            for row, s in self._load_index()[layer]:
                if s == shard:
                    yield row.clip_id, np.array(arr[row.offset : row.offset + row.n_tokens])

    def iter_token_batches(
        self,
        layer: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        buffer_tokens: int = 262_144,
        drop_last: bool = False,
    ) -> Iterator[torch.Tensor]:
        """Float32 batches (batch_size, d) of tokens, shuffled through a buffer.

        Shards are visited in a seeded random order and their tokens pooled in a
        buffer of about ``buffer_tokens``; each time the buffer is full it is
        permuted and half of it is emitted, so tokens mix across shards without
        holding the whole layer in memory.
        """
        self._check_layer(layer)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
        buf = np.zeros((0, self.d_model), self.meta.dtype)
        carry = np.zeros((0, self.d_model), self.meta.dtype)  # < batch_size leftover tokens

        def emit(arr: np.ndarray) -> Iterator[torch.Tensor]:
            nonlocal carry
            arr = np.concatenate([carry, arr]) if len(carry) else arr
            n_full = len(arr) // batch_size
            for i in range(n_full):
                yield torch.from_numpy(np.asarray(arr[i * batch_size : (i + 1) * batch_size], np.float32))
            carry = arr[n_full * batch_size :]

        for si in order:
            part = np.asarray(self.shard_array(self.shards[si], layer))
            buf = np.concatenate([buf, part]) if len(buf) else part
            if len(buf) >= buffer_tokens:
                if shuffle:
                    buf = buf[rng.permutation(len(buf))]
                half = len(buf) // 2
                yield from emit(buf[:half])
                buf = buf[half:]
        if shuffle and len(buf):
            buf = buf[rng.permutation(len(buf))]
        yield from emit(buf)
        if len(carry) and not drop_last:
            yield torch.from_numpy(np.asarray(carry, np.float32))
