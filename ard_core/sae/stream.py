"""Training SAEs on the model's forward passes, with no activation store (``[sae].source = "stream"``).

When the tokens a grid of SAEs trains on would not fit on disk (the paper's 1e5 steps x 4,096
tokens are 410M tokens, 3.4 TB per layer at d = 4,096 in float16 if no token repeats), the model
runs over the clips as training goes, the way EleutherAI sparsify and SAELens train: one forward
pass feeds the SAEs of every configured layer and expansion at once.

**Shuffling.** Consecutive tokens of a clip are alike, so they are mixed before batching. The
clips of an epoch come in a seeded order; they are run through the model in groups of
``stream_batch_clips`` until a *block* holds at least ``buffer_tokens`` tokens (in host memory,
float16 like the store); the block's tokens are permuted (seeded by epoch and the block's first
clip) and cut into batches of ``batch_size``; the remainder, fewer than one batch, is dropped.
Every layer of a block is permuted alike, so the SAEs of all layers step together.

**Resume.** A block is a function of (seed, epoch, its first clip), and ``stream.json`` beside the
SAEs records each block's first step, written before every checkpoint. A resumed run rebuilds
the block that holds its next step (one block of forward passes), skips the batches already
taken, and goes on: the SAE checkpoint (weights, Adam, schedule, dead counters) and the data
position together give the steps an uninterrupted run takes (bit for bit on CPU; on GPU up to the
forward pass's own non-determinism). One process only: under torchrun use ``source = "store"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import Tensor

from ard_core.activations import clip_states
from ard_core.audio import AudioError, load_audio
from ard_core.config import ConfigError
from ard_core.datasets import ClipRecord
from ard_core.durable import write_text
from ard_core.models.base import AudioLLM
from ard_core.sae.data import Dist
from ard_core.sae.section import SaeSection

log = logging.getLogger(__name__)


class StreamSpec(NamedTuple):
    """What the stream runs: the extract stage's prompt and positions, so the SAEs see the tokens score reads."""

    prompt: str
    """The full chat-template prompt (``llm.build_prompt`` of the extract stage's question)."""
    positions: str
    """'audio' or 'all', as in [extract]."""
    layers: list[int]
    """Layers whose residual stream is streamed."""


@dataclass
class Block:
    """One shuffle block of the stream: where it starts and which steps it serves."""

    epoch: int
    cursor: int
    """Index of its first clip in the epoch's clip order."""
    next_cursor: int
    """Index of the first clip after it (== number of clips: the epoch's last block)."""
    first_step: int
    n_batches: int


class ActivationStream:
    """The model's residual stream over ``records``, as shuffled batches for every layer at once."""

    def __init__(self, llm: AudioLLM, records: Sequence[ClipRecord], spec: StreamSpec, batch_size: int,
                 buffer_tokens: int, batch_clips: int, seed: int, device: torch.device, state_path: Path) -> None:
        if not records:
            raise ConfigError("[sae].source = 'stream': no clips in [sae].stream_splits of the manifest")
        self.llm, self.records, self.spec = llm, list(records), spec
        self.batch_size, self.buffer_tokens, self.batch_clips = batch_size, buffer_tokens, batch_clips
        self.seed, self.device, self.state_path = seed, device, Path(state_path)
        self.blocks: list[Block] = self._load_history()
        self._samples: dict[tuple[int, int], dict[int, Tensor]] = {}
        self.tokens_per_clip: float | None = None

    # -- bookkeeping -------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Everything that decides the blocks; a history made under other settings is discarded."""
        key = json.dumps([[r.clip_id for r in self.records], self.spec, self.batch_size, self.buffer_tokens,
                          self.batch_clips, self.seed, self.llm.name])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def _load_history(self) -> list[Block]:
        if not self.state_path.is_file():
            return []
        data = json.loads(self.state_path.read_text())
        if data.get("fingerprint") != self.fingerprint():
            log.info("%s was written for other stream settings; starting the stream over", self.state_path)
            return []
        return [Block(**b) for b in data["blocks"]]

    def save_history(self) -> None:
        """Record the blocks so far (call before writing SAE checkpoints)."""
        write_text(self.state_path, json.dumps({"fingerprint": self.fingerprint(),
                                                "blocks": [asdict(b) for b in self.blocks]}, indent=1) + "\n")

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + 17 + epoch)
        return torch.randperm(len(self.records), generator=g).tolist()

    # -- forward passes ----------------------------------------------------------------------------
    def _forward(self, idx: Sequence[int]) -> list[dict[int, Tensor]]:
        """Per decodable clip, {layer: (T, d) float16 on the host}; undecodable clips are skipped."""
        audios = []
        for i in idx:
            try:
                audios.append(load_audio(self.records[i].path, sr=self.llm.sampling_rate))
            except AudioError as exc:
                log.warning("clip %r skipped: %s", self.records[i].clip_id, exc)
        if not audios:
            return []
        states = clip_states(self.llm, audios, self.spec.prompt, self.spec.layers, self.spec.positions)
        return [{l: s.to("cpu", torch.float16) for l, s in per.items()} for per in states]

    def _tokens(self, idx: Sequence[int], until: int) -> tuple[dict[int, Tensor], int]:
        """Tokens of the clips ``idx`` in order, stopping after the forward batch that reaches ``until``
        tokens; returns them per layer and how many clips were used."""
        parts: dict[int, list[Tensor]] = {l: [] for l in self.spec.layers}
        have, used = 0, 0
        while used < len(idx) and have < until:
            chunk = idx[used : used + self.batch_clips]
            used += len(chunk)
            for per in self._forward(chunk):
                for l, t in per.items():
                    parts[l].append(t)
                have += len(per[self.spec.layers[0]])
        d = self.llm.d_model
        return {l: torch.cat(p) if p else torch.zeros(0, d, dtype=torch.float16) for l, p in parts.items()}, used

    def _block(self, epoch: int, cursor: int) -> tuple[dict[int, Tensor], int]:
        order = self.order(epoch)
        tokens, used = self._tokens(order[cursor:], self.buffer_tokens)
        n = len(tokens[self.spec.layers[0]])
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7_919 + cursor)
        perm = torch.randperm(n, generator=g)
        return {l: t[perm] for l, t in tokens.items()}, cursor + used

    # -- what the trainer reads --------------------------------------------------------------------
    def _start(self, step: int) -> tuple[int, int, int]:
        """(epoch, cursor, first_step) of the known block holding ``step``, or of the block after the last known one."""
        for b in self.blocks:
            if b.first_step <= step < b.first_step + b.n_batches:
                return b.epoch, b.cursor, b.first_step
        if not self.blocks:
            return 0, 0, 0
        last = self.blocks[-1]
        end = last.first_step + last.n_batches
        if last.next_cursor >= len(self.records):
            return last.epoch + 1, 0, end
        return last.epoch, last.next_cursor, end

    def batches(self, start_step: int = 0) -> Iterator[dict[int, Tensor]]:
        """``{layer: (batch_size, d) float32}`` on the device for steps start_step, start_step + 1, ..."""
        epoch, cursor, step = self._start(start_step)
        empty_epoch = True
        while True:
            tokens, next_cursor = self._block(epoch, cursor)
            n_batches = len(tokens[self.spec.layers[0]]) // self.batch_size
            # blocks are deterministic: a rebuilt block equals the recorded one, later ones are rebuilt as we go
            self.blocks = [b for b in self.blocks if b.first_step < step] + [
                Block(epoch, cursor, next_cursor, step, n_batches)]
            for j in range(n_batches):
                if step + j >= start_step:
                    yield {l: t[j * self.batch_size : (j + 1) * self.batch_size].to(self.device).float()
                           for l, t in tokens.items()}
            empty_epoch = empty_epoch and n_batches == 0
            step += n_batches
            epoch, cursor = (epoch + 1, 0) if next_cursor >= len(self.records) else (epoch, next_cursor)
            if cursor == 0:
                if empty_epoch:
                    raise ConfigError(f"the {len(self.records)} clips of [sae].stream_splits give fewer than "
                                      f"[sae].batch_size = {self.batch_size} tokens per epoch; lower batch_size "
                                      "or raise buffer_tokens")
                empty_epoch = True

    def sample(self, n: int, seed: int) -> dict[int, Tensor]:
        """About ``n`` float32 tokens per layer (from clips in a seeded order, then shuffled), cached per seed."""
        if (seed, n) not in self._samples:
            order = torch.randperm(len(self.records), generator=torch.Generator().manual_seed(seed)).tolist()
            tokens, used = self._tokens(order, n)
            got = len(tokens[self.spec.layers[0]])
            if got == 0:
                raise ConfigError("no clip of [sae].stream_splits could be decoded; see the warnings above")
            self.tokens_per_clip = got / used
            perm = torch.randperm(got, generator=torch.Generator().manual_seed(seed + 1))[:n]
            self._samples[seed, n] = {l: t[perm] for l, t in tokens.items()}
        return {l: t.to(self.device).float() for l, t in self._samples[seed, n].items()}

    def layer(self, layer: int) -> "StreamLayer":
        return StreamLayer(self, layer)


class StreamLayer:
    """One layer of an :class:`ActivationStream`, seen as the trainer's token source
    (:class:`ard_core.sae.data.Tokens`)."""

    in_memory = False

    def __init__(self, stream: ActivationStream, layer: int) -> None:
        self.stream, self.layer_index = stream, layer
        self.global_batch = stream.batch_size

    @property
    def n_tokens(self) -> int:
        """Tokens of one epoch, estimated from the clips sampled so far (the dead-latent threshold needs it)."""
        if self.stream.tokens_per_clip is None:
            self.stream.sample(self.global_batch, seed=self.stream.seed * 100_003 + 7_919)
        return int(self.stream.tokens_per_clip * len(self.stream.records))

    def batches(self, start_step: int = 0) -> Iterator[Tensor]:
        for xs in self.stream.batches(start_step):
            yield xs[self.layer_index]

    def sample(self, n: int, seed: int) -> Tensor:
        return self.stream.sample(n, seed)[self.layer_index][:n]


def train_stream(section: SaeSection, stream: ActivationStream, jobs: Sequence[tuple[int, int, Path]], *,
                 model_name: str, device: torch.device, seed: int = 0, progress: bool = True) -> list:
    """Train (or resume) the SAE of every (layer, expansion, folder) of ``jobs`` on one stream of forward
    passes; returns their :class:`ard_core.sae.train.TrainResult` in order."""
    from tqdm.auto import tqdm

    from ard_core.sae.train import StepLoop, finish, state_for

    if Dist.current().world > 1:
        raise ConfigError("[sae].source = 'stream' runs in one process; under torchrun use source = 'store'")
    # the init sample first: it also measures the tokens per clip that set each SAE's dead threshold
    stream.sample(section.init_sample_tokens, seed=seed * 100_003 + 7_919)
    states = [state_for(section, stream.layer(layer), stream.llm.d_model, layer, e, folder, model_name=model_name,
                        device=device, seed=seed) for layer, e, folder in jobs]
    loops = [StepLoop(s, progress=False) for s in states]
    start = min(s.step for s in states)
    bar = tqdm(total=section.steps, initial=start, desc=f"stream -> {len(states)} SAEs", disable=not progress,
               dynamic_ncols=True, mininterval=1.0)
    try:
        if start < section.steps:
            for step, xs in enumerate(stream.batches(start), start):
                if (step + 1) % section.checkpoint_every == 0:
                    stream.save_history()  # before the checkpoints of this step, so they can be resumed
                for loop in loops:
                    if loop.state.step == step:  # a resumed SAE ahead of the others waits for its step
                        loop.step(xs[loop.state.layer])
                bar.update(1)
                if step + 1 >= section.steps:
                    break
    finally:
        bar.close()
        for loop in loops:
            loop.close()
    stream.save_history()
    return [finish(s) for s in states]
