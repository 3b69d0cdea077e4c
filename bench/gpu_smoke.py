"""GPU smoke test of the paper's path: Qwen2-Audio-7B-Instruct on one CUDA GPU.

    python bench/gpu_smoke.py                      # random init from the shipped config.json
    python bench/gpu_smoke.py --weights DIR        # the real checkpoint (save_pretrained folder)

Three steps, each through the library code the pipeline runs, at the paper's sizes:

1. **extract**: N clips of the real 30 s window (750 audio tokens each) through the model,
   the residual stream after ``--layer`` captured by forward hooks
   (``ard_core.activations.run_and_capture``) and written to an activation store
   (``ard_core.store.ActivationWriter``);
2. **train-sae**: one TopK SAE (d = 4096, expansion ``--expansion``, K = 250, batch 4096)
   for M steps on that store (``ard_core.sae.train.train_sae``: init, fit, finish);
3. **steer**: greedy generation of ``--new-tokens`` tokens with and without one SAE feature
   clamped at the audio, prompt and generated positions (``ard_core.steering``).

It prints clips/s, audio tokens/s, SAE training tokens/s, generated tokens/s with and without
steering, and the peak GPU memory, and writes them as JSON (``--out``).

With the random init no tokenizer files are needed: the prompt is tokenised by the shipped
tiny model's tokenizer (its ids all lie inside Qwen2-Audio's vocabulary) and the config's
audio token id is set to that tokenizer's ``<|AUDIO|>``; everything downstream of the token
ids (shapes, memory, speed) is the 7B's. Generated text is meaningless, and says nothing
about the real model. Imports only torch, transformers, numpy and the library modules
that need nothing else, so it runs on a bare CUDA image.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ard_core.activations import run_and_capture  # noqa: E402
from ard_core.models.qwen2_audio import Qwen2AudioAdapter  # noqa: E402
from ard_core.sae.train import SaeSection, train_sae  # noqa: E402
from ard_core.steering import SteerSpec, steering  # noqa: E402
from ard_core.store import ActivationStore, ActivationWriter, StoreMeta  # noqa: E402

SHIPPED_CONFIG = REPO / "configs" / "models" / "qwen2-audio-7b-instruct"
TINY = REPO / "assets" / "models" / "tiny-audiollm"


def random_model(config_dir: Path, device: str, dtype: torch.dtype) -> Qwen2AudioAdapter:
    """The architecture of ``config_dir`` (Qwen2-Audio-7B-Instruct's by default) with random weights,
    built directly on ``device``."""
    from transformers import (AutoTokenizer, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, WhisperFeatureExtractor)

    tok = AutoTokenizer.from_pretrained(TINY)
    fe = WhisperFeatureExtractor.from_pretrained(config_dir)  # the real 30 s, 128-mel extractor
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok,
                                    chat_template=(TINY / "chat_template.jinja").read_text())
    cfg = Qwen2AudioConfig.from_pretrained(config_dir)
    cfg.audio_token_index = tok.convert_tokens_to_ids("<|AUDIO|>")
    if hasattr(cfg, "audio_token_id"):
        cfg.audio_token_id = cfg.audio_token_index
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(cfg, dtype=dtype)
    return Qwen2AudioAdapter(model.eval(), processor, f"{config_dir.name}-random")


def clips(n: int, seconds: float, sr: int) -> list[np.ndarray]:
    """Seeded noise-plus-tone clips: shapes and timings are what matter here."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    return [(0.2 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
            for i in range(n)]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def extract(llm: Qwen2AudioAdapter, audios: list[np.ndarray], layer: int, batch: int, root: Path) -> dict:
    prompt = llm.build_prompt("Generate a detailed caption for the audio clip.")
    writer = ActivationWriter(root, StoreMeta(model=llm.name, layers=[layer], d_model=llm.d_model))
    tokens = 0
    sync()
    t0 = time.perf_counter()
    for b in range(0, len(audios), batch):
        chunk = audios[b : b + batch]
        inputs = llm.prepare(chunk, [prompt] * len(chunk))
        hidden = run_and_capture(llm, inputs, [layer])[layer]
        mask = llm.audio_positions(inputs["input_ids"])
        for i in range(len(chunk)):
            acts = hidden[i][mask[i]].float().cpu().numpy()
            writer.add(f"clip{b + i:04d}", layer, acts, np.arange(len(acts), dtype=np.int32))
            tokens += len(acts)
    sync()
    seconds = time.perf_counter() - t0
    writer.commit(0)
    return {"clips": len(audios), "audio_tokens": tokens, "tokens_per_clip": tokens / len(audios),
            "seconds": seconds, "clips_per_s": len(audios) / seconds, "tokens_per_s": tokens / seconds}


def train(store: ActivationStore, layer: int, expansion: int, steps: int, root: Path, device: str) -> tuple[dict, object]:
    section = SaeSection(layers=[layer], expansions=[expansion], k=250, batch_size=4096, steps=steps, lr=1e-4,
                         warmup_steps=min(10, steps - 1), lr_decay_frac=0.0, checkpoint_every=10**9, log_every=10,
                         impl="auto", bf16=True, in_memory_max_gb=40.0)
    sync()
    t0 = time.perf_counter()
    res = train_sae(section, store, layer, expansion, root / "sae", model_name=store.meta.model,
                    device=torch.device(device), progress=False)
    sync()
    out = {"d_in": res.cfg.d_in, "d_sae": res.cfg.d_sae, "k": res.cfg.k, "steps": res.steps, "batch": 4096,
           "seconds": time.perf_counter() - t0, "tokens_per_s": res.tokens_per_s, "impl": res.impl,
           "fvu": res.metrics.fvu}
    from ard_core.sae import TopKSAE

    return out, TopKSAE.load(root / "sae", device=device).eval()


@torch.inference_mode()
def generate(llm: Qwen2AudioAdapter, audio: np.ndarray, new_tokens: int, spec: SteerSpec | None,
             repeats: int = 3) -> dict:
    """Greedy generation of exactly ``new_tokens`` tokens (median of ``repeats`` timed runs after a warm-up)."""
    inputs = llm.prepare([audio], [llm.build_prompt("What is the gender of the speaker?")])
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=llm.tokenizer.pad_token_id)
    times, n = [], 0
    for r in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        if spec is None:
            out = llm.model.generate(**inputs, **kwargs)
        else:
            with steering(llm, [spec], ("audio", "prompt", "generated"), inputs["input_ids"], inputs["attention_mask"]):
                out = llm.model.generate(**inputs, **kwargs)
        sync()
        if r:  # the first run warms up
            times.append(time.perf_counter() - t0)
        n = int(out.shape[1] - inputs["input_ids"].shape[1])
    seconds = float(np.median(times))
    return {"new_tokens": n, "prompt_tokens": int(inputs["input_ids"].shape[1]), "seconds": seconds,
            "tokens_per_s": n / seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None, help="a Qwen2-Audio save_pretrained folder (default: random init)")
    p.add_argument("--config", type=Path, default=SHIPPED_CONFIG,
                   help="config.json + preprocessor_config.json folder of the random init (default: the shipped 7B's)")
    p.add_argument("--device", default="cuda", help="'cuda' (the point of this test) or 'cpu' for a dry run on a small --config")
    p.add_argument("--clips", type=int, default=32, help="clips to extract (30 s each)")
    p.add_argument("--batch", type=int, default=8, help="clips per forward")
    p.add_argument("--layer", type=int, default=16, help="0-based decoder layer (the paper's 5/16/26)")
    p.add_argument("--expansion", type=int, default=8, help="SAE expansion factor (d_sae = e x 4096)")
    p.add_argument("--steps", type=int, default=200, help="SAE training steps of 4096 tokens")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = p.parse_args()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU: this smoke test measures the GPU path (use --device cpu --config SMALL for a dry run)",
              file=sys.stderr)
        return 2
    report: dict = {"gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
                    "torch": torch.__version__}
    import transformers

    report["transformers"] = transformers.__version__
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    llm = (Qwen2AudioAdapter.load(str(args.weights), device=device) if args.weights
           else random_model(args.config, device, dtype))
    sync()
    report["model"] = {"name": llm.name, "weights": str(args.weights) if args.weights else "random init",
                       "parameters": sum(p.numel() for p in llm.model.parameters()), "n_layers": llm.n_layers,
                       "d_model": llm.d_model, "load_seconds": time.perf_counter() - t0,
                       "gpu_gib_after_load": peak_gib()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        audios = clips(args.clips, 30.0, llm.sampling_rate)
        report["extract"] = extract(llm, audios, args.layer, args.batch, root / "activations")
        report["extract"]["peak_gib"] = peak_gib()
        reset_peak()
        store = ActivationStore(root / "activations")
        report["train_sae"], sae = train(store, args.layer, args.expansion, args.steps, root, device)
        report["train_sae"]["peak_gib"] = peak_gib()
        reset_peak()
        spec = SteerSpec(layer=args.layer, values={0: 10.0}, sae=sae)
        report["generate"] = generate(llm, audios[0], args.new_tokens, None)
        report["steer"] = generate(llm, audios[0], args.new_tokens, spec)
        report["steer"]["peak_gib"] = peak_gib()
    report["steer"]["relative_speed"] = report["steer"]["tokens_per_s"] / report["generate"]["tokens_per_s"]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
