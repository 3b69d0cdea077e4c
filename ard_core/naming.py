"""Stage 3 of AR&D: name a feature's concept from the captions of its top clips.

The AudioLLM captions each top clip with :data:`CAPTION_PROMPT`; a summarizer
turns the p captions into a concept name and a one-sentence description with
:data:`SUMMARY_PROMPT` (the paper's prompts). Summarizer backends:

- ``consensus`` (offline default): deterministic; names the concept from the
  phrase the captions share most.
- ``openai``: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp
  server, ...), e.g. Llama-3-70B-Instruct as in the paper. Base URL and model
  from the config, the key from an environment variable. Retries with backoff.
- ``transformers``: a local causal LM (folder or hub id) with a chat template.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple, Protocol, Sequence

from ard_core.config import ConfigError

log = logging.getLogger(__name__)

CAPTION_PROMPT = "Generate a detailed caption for the audio clip"
SUMMARY_PROMPT = "Describe the common sound-related concept present among these captions"
ANSWER_FORMAT = (
    "Answer in exactly two lines:\n"
    "Name: <a short concept name, at most 5 words>\n"
    "Description: <one sentence>"
)


class Concept(NamedTuple):
    name: str
    description: str


class Summarizer(Protocol):
    def summarize(self, captions: Sequence[str]) -> Concept: ...


def summary_messages(captions: Sequence[str]) -> list[dict[str, str]]:
    listing = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(captions))
    return [
        {"role": "system", "content": "You name the concepts that audio interpretability features respond to."},
        {"role": "user", "content": f"{SUMMARY_PROMPT}.\n\nCaptions:\n{listing}\n\n{ANSWER_FORMAT}"},
    ]


def parse_concept(text: str) -> Concept:
    """Parse 'Name: ...' / 'Description: ...'; fall back to the first line as the name."""
    name = re.search(r"^\s*\**name\**\s*:\s*(.+)$", text, re.I | re.M)
    desc = re.search(r"^\s*\**description\**\s*:\s*(.+)$", text, re.I | re.M)
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    if not lines:
        raise ValueError("the summarizer returned an empty answer")
    n = (name.group(1) if name else lines[0]).strip().strip('"*. ')
    d = (desc.group(1) if desc else " ".join(lines[1:]) or lines[0]).strip()
    return Concept(n, d)


# -- consensus (offline, deterministic) -------------------------------------------------
STOPWORDS = frozenset(
    "a an the of in on at to with and or by for from is are was were be being been it its this that these "
    "there their they some very into over under as while which who whose audio clip sound sounds recording "
    "heard can you we".split()
)


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-zA-Z][a-zA-Z'-]*", caption.lower())


@dataclass
class ConsensusSummarizer:
    """Names the concept by the most specific content phrase (1-3 words) most captions share."""

    max_words: int = 3

    def summarize(self, captions: Sequence[str]) -> Concept:
        caps = [c for c in captions if c and c.strip()]
        if not caps:
            return Concept("unknown", "No captions were available for this feature.")
        support: Counter[tuple[str, ...]] = Counter()
        first_seen: dict[tuple[str, ...], int] = {}
        for ci, cap in enumerate(caps):
            words = _words(cap)
            # a dict, not a set: first_seen must follow the caption's word order, not string
            # hashes (randomised per process), or ties are broken differently on every run
            grams: dict[tuple[str, ...], None] = {}
            for n in range(1, self.max_words + 1):
                for i in range(len(words) - n + 1):
                    g = tuple(words[i : i + n])
                    if g[0] in STOPWORDS or g[-1] in STOPWORDS:
                        continue
                    grams[g] = None
            for g in grams:
                support[g] += 1
                first_seen.setdefault(g, ci * 1000 + len(first_seen))
        if not support:
            return Concept(caps[0][:40], f"Captions share no content words; first caption: {caps[0]}")
        # The most specific phrase (longest) that a majority of captions share; then the
        # best-supported; then the earliest. Falls back to the best-supported phrase.
        majority = max(2, len(caps) // 2 + 1) if len(caps) > 1 else 1
        pool = [g for g in support if support[g] >= majority] or list(support)
        best = max(pool, key=lambda g: (len(g), support[g], -first_seen[g]))
        # also report a second shared phrase that is not part of the first
        others = [g for g in support if support[g] >= majority and not set(g) & set(best)]
        second = max(others, key=lambda g: (support[g], len(g), -first_seen[g])) if others else None
        name = " ".join(best)
        k, p = support[best], len(caps)
        desc = f"{k} of {p} top clips are described as '{' '.join(best)}'"
        if second is not None:
            desc += f"; {support[second]} of {p} as '{' '.join(second)}'"
        return Concept(name, desc + ".")


# -- OpenAI-compatible endpoint -----------------------------------------------------------
class EndpointError(RuntimeError):
    """The chat endpoint failed after all retries; the message says where and why."""


@dataclass
class ChatEndpoint:
    """A client of an OpenAI-compatible ``/chat/completions`` endpoint with retries."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    temperature: float = 0.0

    def _post(self, payload: dict) -> dict:
        url = self.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = json.dumps(payload).encode()
        last = ""
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}"
                if exc.code in (400, 401, 403, 404):  # not worth retrying
                    break
            except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        hint = "" if os.environ.get(self.api_key_env) else f" (no API key in ${self.api_key_env})"
        raise EndpointError(f"chat endpoint {url} (model {self.model!r}) failed: {last}{hint}")

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 120) -> str:
        out = self._post({"model": self.model, "messages": messages, "temperature": self.temperature,
                          "max_tokens": max_tokens})
        try:
            return out["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"chat endpoint {self.base_url} returned no choices[0].message.content: {str(out)[:300]}") from exc


@dataclass
class OpenAISummarizer(ChatEndpoint):
    """Names concepts through an OpenAI-compatible endpoint (e.g. Llama-3-70B-Instruct on vLLM)."""

    def summarize(self, captions: Sequence[str]) -> Concept:
        return parse_concept(self.chat(summary_messages(captions)))


# -- local transformers LM ----------------------------------------------------------------
@dataclass
class TransformersSummarizer:
    name_or_path: str
    device: str = "cpu"
    max_new_tokens: int = 80

    def __post_init__(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.name_or_path).to(self.device).eval()

    def summarize(self, captions: Sequence[str]) -> Concept:
        import torch

        ids = self.tokenizer.apply_chat_template(summary_messages(captions), add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return parse_concept(text)


@dataclass
class SummarizerConfig:
    """The ``[describe.summarizer]`` settings."""

    backend: str = "consensus"
    """'consensus' (offline, deterministic), 'openai' (OpenAI-compatible endpoint) or 'transformers'."""
    base_url: str = "http://localhost:8000/v1"
    """openai: the endpoint's base URL (vLLM, Ollama's /v1, ...)."""
    model: str = "meta-llama/Meta-Llama-3-70B-Instruct"
    """openai: the served model name; transformers: folder or hub id of a causal LM."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: environment variable holding the API key (may be unset for local servers)."""
    timeout_s: float = 60.0
    """openai: per-request timeout."""
    retries: int = 3
    """openai: retries after the first failure, with exponential backoff."""

    def __post_init__(self) -> None:
        if self.backend not in ("consensus", "openai", "transformers"):
            raise ConfigError(f"summarizer backend {self.backend!r}: use consensus, openai or transformers")
        if self.timeout_s <= 0 or self.retries < 0:
            raise ConfigError("summarizer timeout_s must be > 0 and retries >= 0")

    def endpoint(self) -> ChatEndpoint:
        return ChatEndpoint(self.base_url, self.model, self.api_key_env, self.timeout_s, self.retries)

    def build(self, device: str = "cpu") -> Summarizer:
        if self.backend == "consensus":
            return ConsensusSummarizer()
        if self.backend == "openai":
            return OpenAISummarizer(self.base_url, self.model, self.api_key_env, self.timeout_s, self.retries)
        return TransformersSummarizer(self.model, device=device)
