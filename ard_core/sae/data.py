"""Token batches for SAE training: the activation store as an endless, seeded, resumable stream."""

from __future__ import annotations

from typing import Iterator, NamedTuple, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ard_core.config import ConfigError
from ard_core.store import ActivationStore


class Dist(NamedTuple):
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "Dist":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls(0, 1)


class Tokens(Protocol):
    """What the trainer reads one layer's tokens from: :class:`TokenSource` (the activation store) or
    a layer of :class:`ard_core.sae.stream.ActivationStream` (the model's forward passes)."""

    n_tokens: int
    """Tokens of one pass over the data (sets the dead-latent threshold)."""
    global_batch: int
    """Tokens per optimizer step over all ranks."""
    in_memory: bool
    """Whether the tokens are held in memory (recorded in train.json)."""

    def batches(self, start_step: int = 0) -> Iterator[Tensor]:
        """float32 (batch, d) batches for steps start_step, start_step + 1, ..."""

    def sample(self, n: int, seed: int) -> Tensor:
        """About n float32 tokens, the same for a given seed, for init and evaluation."""


class TokenSource:
    """An endless, seeded, resumable stream of this rank's part of every global batch.

    When the layer fits in ``in_memory_max_gb`` it is held in memory (on the
    training device) as float16 and each epoch is a seeded permutation; global batch
    j of an epoch is tokens perm[j*B:(j+1)*B] and rank r takes its r-th slice.
    Otherwise each rank streams its own subset of the store's shards through the
    store's shuffling buffer. Either way the batch of step s depends only on
    (seed, s), so a resumed run sees the data it would have seen.
    """

    def __init__(self, store: ActivationStore, layer: int, batch_size: int, seed: int, device: torch.device,
                 in_memory_max_gb: float, buffer_tokens: int, dist_info: Dist = Dist(0, 1)) -> None:
        if batch_size % dist_info.world:
            raise ConfigError(f"[sae].batch_size = {batch_size} must be divisible by the {dist_info.world} ranks")
        self.layer, self.seed, self.device, self.dist = layer, seed, device, dist_info
        self.global_batch = batch_size
        self.batch = batch_size // dist_info.world
        self.buffer_tokens = buffer_tokens
        self.n_tokens = store.n_tokens(layer)
        if self.n_tokens < batch_size:
            raise ConfigError(
                f"layer {layer} has {self.n_tokens} stored tokens, fewer than [sae].batch_size = {batch_size}; "
                "lower batch_size or extract more clips"
            )
        self.in_memory = self.n_tokens * store.d_model * 2 <= in_memory_max_gb * 1e9
        self.data: Tensor | None = None
        if self.in_memory:
            self.data = torch.from_numpy(np.array(store.load_layer(layer), dtype=np.float16)).to(device)  # a copy: memmaps are read-only
            self.steps_per_epoch = self.n_tokens // batch_size
            self.store = store
        else:
            # Each rank reads its own shards; with fewer shards than ranks every rank reads
            # the same stream and keeps every world-th batch of it.
            self.store = ActivationStore(store.root)
            self.stride = 1
            if dist_info.world > 1 and len(self.store.shards) >= dist_info.world:
                self.store.shards = self.store.shards[dist_info.rank :: dist_info.world]
            else:
                self.stride = dist_info.world
            self.steps_per_epoch = self.store.n_tokens(layer) // self.batch // self.stride
            if self.steps_per_epoch == 0:
                raise ConfigError(f"rank {dist_info.rank} has fewer than {self.batch} tokens of layer {layer}; "
                                  "use fewer ranks or a smaller [sae].batch_size")

    def batches(self, start_step: int = 0) -> Iterator[Tensor]:
        """float32 (batch_size / world, d) batches for steps start_step, start_step + 1, ..."""
        epoch, skip = divmod(start_step, self.steps_per_epoch)
        while True:
            yield from self._epoch(epoch, skip)
            epoch, skip = epoch + 1, 0

    def _epoch(self, epoch: int, skip: int) -> Iterator[Tensor]:
        if self.data is not None:
            perm = torch.randperm(self.n_tokens, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            lo = self.dist.rank * self.batch
            for j in range(skip, self.steps_per_epoch):
                sel = perm[j * self.global_batch + lo : j * self.global_batch + lo + self.batch]
                yield self.data[sel.to(self.device)].float()
            return
        it = self.store.iter_token_batches(self.layer, self.batch, shuffle=True, seed=self.seed * 100_003 + epoch,
                                           buffer_tokens=self.buffer_tokens, drop_last=True)
        for j, x in enumerate(it):
            step, mine = divmod(j, self.stride)
            if step >= self.steps_per_epoch:
                return
            if step >= skip and mine == self.dist.rank % self.stride:
                yield x.to(self.device, non_blocking=True)

    def sample(self, n: int, seed: int) -> Tensor:
        """About n float32 tokens (all ranks get the same ones), for init and evaluation."""
        if self.data is not None:
            idx = torch.randperm(self.n_tokens, generator=torch.Generator().manual_seed(seed))[:n]
            return self.data[idx.to(self.device)].float()
        parts, have = [], 0
        full = ActivationStore(self.store.root)
        for x in full.iter_token_batches(self.layer, min(n, 4096), shuffle=True, seed=seed,
                                         buffer_tokens=self.buffer_tokens):
            parts.append(x)
            have += len(x)
            if have >= n:
                break
        return torch.cat(parts)[:n].to(self.device)

