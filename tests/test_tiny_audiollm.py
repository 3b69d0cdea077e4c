"""The tiny Qwen2-Audio recipe, its training loop, and the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ard_core.audio import save_audio
from ard_core.datasets import LABEL_VOCAB, ClipRecord
from ard_core.prompts import label_token_ids
from forge.measure import evaluate_attributes
from forge.tiny_audiollm.config import TinyAudioLLMConfig
from forge.tiny_audiollm.data import TaskSampler, collate, compute_features
from forge.tiny_audiollm.recipe import (
    TinyArch, build_config, build_model, build_processor, check_single_token_labels, n_audio_tokens,
    tokenizer_texts, train_tokenizer,
)
from forge.tiny_audiollm.train import train
from forge.training import corpus_label_sets
from conftest import tone

REPO = Path(__file__).resolve().parents[1]
ANIMALS = ("cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep")
EVENTS = ("siren", "engine", "rain", "beep", "chirp", "knocking", "coin", "explosion", "laser", "jump",
          "buzzer", "powerup")
SMALL = dict(vocab_size=512, audio_d_model=32, audio_layers=1, audio_heads=2, audio_ffn=64, text_hidden=32,
             text_heads=4, text_kv_heads=2, text_ffn=64, chunk_length_s=2)


@pytest.fixture(scope="module")
def synth_clips(tmp_path_factory: pytest.TempPathFactory) -> list[ClipRecord]:
    """Speech-like tones (gender = pitch, language = vibrato rate) and 'animals' (pitch bands)."""
    root = tmp_path_factory.mktemp("synth-clips")
    recs = []
    for i in range(24):
        gender, lang = ("male", "female")[i % 2], ("English", "German")[(i // 2) % 2]
        t = np.arange(int((1.2 + 0.3 * (i % 3)) * 16000)) / 16000
        f0 = 120.0 if gender == "male" else 280.0
        vib = 4.0 if lang == "English" else 11.0
        x = 0.3 * np.sin(2 * np.pi * f0 * t + 3.0 * np.sin(2 * np.pi * vib * t))
        path = root / f"s{i}.wav"
        save_audio(path, x.astype(np.float32))
        recs.append(ClipRecord(f"s{i}", path, "synth", "train", len(t) / 16000,
                               {"gender": gender, "language": lang}, f"a {gender} voice speaking {lang}"))
    for i in range(12):
        animal = ("dog", "cat", "cow")[i % 3]
        path = root / f"a{i}.wav"
        save_audio(path, tone(1.0, 500.0 + 400.0 * (i % 3), seed=i))
        recs.append(ClipRecord(f"a{i}", path, "synth", "train", 1.0, {"animal": animal}, f"a {animal} sound"))
    return recs


def test_every_corpus_label_is_one_token_with_its_space() -> None:
    label_sets = {**LABEL_VOCAB, "animal": ANIMALS, "sound_event": EVENTS}
    tok = train_tokenizer(tokenizer_texts(label_sets, ["a man speaking English in a neutral voice"]), 1024)
    check_single_token_labels(tok, label_sets)
    for labels in label_sets.values():
        ids = label_token_ids(tok, labels)
        assert [tok.convert_ids_to_tokens(i) for i in ids] == ["Ġ" + lab for lab in labels]
    # The check catches a label that is not one token.
    with pytest.raises(ValueError, match="not one token"):
        check_single_token_labels(tok, {"animal": ("hippopotamus",)})


def test_recipe_pieces_agree(synth_clips: list[ClipRecord]) -> None:
    arch = TinyArch(**SMALL)
    labels = corpus_label_sets(synth_clips)
    assert labels["language"] == LABEL_VOCAB["language"]  # a closed vocabulary is kept whole
    assert labels["animal"] == ("dog", "cat", "cow")  # Table I order
    tok = train_tokenizer(tokenizer_texts(labels, [r.caption for r in synth_clips]), arch.vocab_size)
    proc = build_processor(tok, arch)
    config = build_config(arch, tok)
    # The encoder only accepts exactly 2 x max_source_positions mel frames.
    assert proc.feature_extractor.nb_max_frames == 2 * config.audio_config.max_source_positions
    assert proc.feature_extractor.feature_size == 128 == config.audio_config.num_mel_bins
    assert config.audio_token_index == tok.convert_tokens_to_ids("<|AUDIO|>")
    assert config.text_config.num_hidden_layers >= 8
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Q"}]}],
                                    add_generation_prompt=True, tokenize=False)
    assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nQ<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert n_audio_tokens(2 * config.audio_config.max_source_positions) == config.audio_config.max_source_positions // 2


def test_training_batches_equal_what_the_adapter_feeds_the_model(synth_clips: list[ClipRecord]) -> None:
    """Cached features + expanded placeholder == Qwen2AudioProcessor, token for token."""
    from ard_core.models.qwen2_audio import Qwen2AudioAdapter

    arch = TinyArch(**SMALL)
    labels = corpus_label_sets(synth_clips)
    tok = train_tokenizer(tokenizer_texts(labels, [r.caption for r in synth_clips]), arch.vocab_size)
    proc = build_processor(tok, arch)
    model = build_model(build_config(arch, tok), seed=0)
    llm = Qwen2AudioAdapter(model, proc, "tiny")
    feats = compute_features(synth_clips, proc.feature_extractor, "train")
    sampler = TaskSampler(feats, labels, tok, llm.build_prompt, caption_fraction=0.3, seed=1)
    examples = [sampler.sample() for _ in range(12)]
    batch = collate(examples, feats, tok.pad_token_id, llm.audio_token_id, augment=None)
    for j, ex in enumerate(examples):
        ref = llm.prepare([feats.audio[ex.clip]], [ex.prompt.text])
        n = ref["input_ids"].shape[1]
        row = batch["input_ids"][j]
        assert torch.equal(row[:n], ref["input_ids"][0])
        assert row[n:n + len(ex.answer)].tolist() == ex.answer  # the answer follows the prompt
        # The loss is taken exactly where the next token is an answer token.
        assert batch["answer_mask"][j].nonzero().flatten().tolist() == list(range(n - 1, n - 1 + len(ex.answer)))
        torch.testing.assert_close(batch["input_features"][j], ref["input_features"][0], atol=2e-3, rtol=0)
        assert int(batch["feature_attention_mask"][j].sum()) == int(ref["feature_attention_mask"][0].sum())
    # Same logits at the answer position through both paths (right vs left padding aside).
    with torch.no_grad():
        j, ex = 0, examples[0]
        ref = llm.prepare([feats.audio[ex.clip]], [ex.prompt.text])
        ref_logits = model(**ref).logits[0, -1]
        mine = {k: v[j:j + 1] for k, v in batch.items() if k not in ("answer_mask", "clip_index")}
        n = ref["input_ids"].shape[1]
        torch.testing.assert_close(model(**mine).logits[0, n - 1], ref_logits, atol=1e-3, rtol=1e-3)


def test_a_few_training_steps_lower_the_loss(synth_clips: list[ClipRecord], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import safe_open

    from ard_core.models import load_audiollm

    cfg = TinyAudioLLMConfig(out_dir=tmp_path / "tiny", steps_encoder=15, steps=40, warmup_steps=5,
                             batch_size=12, encoder_batch_size=12, eval_every=1000, arch=TinyArch(**SMALL))
    res = train(cfg, seed=0, train_records=synth_clips, progress=False)
    enc = [h.aux_loss for h in res.history if h.phase == "encoder"]
    lm = [h.lm_loss for h in res.history if h.phase == "joint"]
    assert res.encoder_steps_done == 15 and res.steps_done == 40 and len(lm) == 40
    assert np.mean(lm[-5:]) < np.mean(lm[:5]) - 0.5  # the LM learns the answer/caption format
    assert np.mean(enc[-5:]) < np.mean(enc[:5])  # the heads learn the (easy) synthetic tracks
    # The folder is a plain Qwen2-Audio checkpoint (heads dropped) that loads offline.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with safe_open(str(res.out_dir / "model.safetensors"), "pt") as f:
        assert not any("heads" in k for k in f.keys())
    llm = load_audiollm(res.out_dir)
    assert llm.n_layers == 8 and llm.d_model == 32
    assert json.loads((res.out_dir / "label_sets.json").read_text())["gender"] == ["male", "female"]
    assert (res.out_dir / "train_log.csv").read_text().count("\n") > 5


SHIPPED = REPO / "assets" / "models" / "tiny-audiollm"
MANIFEST = REPO / "assets" / "corpus" / "manifest.csv"
needs_shipped = pytest.mark.skipif(
    not (SHIPPED / "model.safetensors").is_file() or not MANIFEST.is_file(),
    reason="shipped tiny AudioLLM or mini corpus not built (python -m forge tiny-audiollm)",
)


@needs_shipped
def test_shipped_model_labels_are_single_tokens() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SHIPPED)
    labels = json.loads((SHIPPED / "label_sets.json").read_text())
    check_single_token_labels(tok, labels)
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size <= 30 * 2 ** 20


@needs_shipped
def test_shipped_model_answers_gender_well_above_chance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads through the adapter offline and measures test-split gender accuracy (P3) here."""
    from ard_core.audio import iter_audio
    from ard_core.datasets import load_manifest
    from ard_core.models import load_audiollm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    llm = load_audiollm(SHIPPED, device="cpu")
    labels = {k: tuple(v) for k, v in json.loads((SHIPPED / "label_sets.json").read_text()).items()}
    recs = [r for r in load_manifest(MANIFEST) if r.split == "test" and "gender" in r.labels]
    clips = list(iter_audio(recs))
    (row,) = evaluate_attributes(llm, [c.record for c in clips], [c.audio for c in clips], labels,
                                 batch_size=32, formats=("P3",), tracks=("gender",), progress=False)
    assert row.n == len(clips) >= 50 and row.chance == 0.5
    assert row.accuracy >= 0.75


def test_token_heads_learn_a_label_only_where_its_spans_say_it_sounds() -> None:
    """A bark inside speech: the token-level 'animal' loss reads only the tokens inside the bark's span,
    the speech tracks every valid token; a clip without spans keeps all of its tokens."""
    import torch
    from torch.nn import functional as F

    from ard_core.datasets import ClipRecord
    from forge.tiny_audiollm.data import sounding_frames, token_mask
    from forge.training import TrackHeads

    recs = [ClipRecord("mix", Path("a.wav"), "t", "train", 3.0, {"gender": "male", "animal": "dog"}, "x",
                       spans={"gender": ((0.0, 3.0),), "animal": ((1.0, 1.6),)}),
            ClipRecord("dog", Path("b.wav"), "t", "train", 2.0, {"animal": "dog"}, "y")]
    frames = sounding_frames(recs, torch.tensor([300, 200]), 300, ["animal", "gender"])
    tokens = {t: token_mask(m, 75) for t, m in frames.items()}  # 4 mel frames per audio token
    assert tokens["animal"][0].nonzero().flatten().tolist() == list(range(25, 40))  # 1.0-1.6 s
    assert tokens["animal"][1].sum() == 50 and tokens["gender"][0].sum() == 75
    heads = TrackHeads(8, {"animal": ("dog", "cat"), "gender": ("male", "female")})
    states, lengths = torch.randn(2, 75, 8), torch.tensor([75, 50])
    targets = {"animal": torch.tensor([0, 0]), "gender": torch.tensor([0, -100])}
    got = heads.token_loss(states, lengths, targets, tokens)
    keep = tokens["animal"] & (torch.arange(75)[None] < lengths[:, None])
    want_animal = F.cross_entropy(heads.heads["animal"](states[keep]), torch.zeros(int(keep.sum()), dtype=torch.long))
    want_gender = F.cross_entropy(heads.heads["gender"](states[0]), torch.zeros(75, dtype=torch.long))
    torch.testing.assert_close(got, (want_animal + want_gender) / 2)


def test_mel_shift_moves_every_bin_together_and_repeats_the_edge() -> None:
    import torch

    from forge.tiny_audiollm.data import shift_mel, spec_augment

    mel = torch.arange(128, dtype=torch.float32)[:, None].repeat(1, 10)
    up, down = shift_mel(mel, 3), shift_mel(mel, -2)
    assert torch.equal(up[3:], mel[:-3]) and torch.equal(up[:3], mel[:1].expand(3, -1))
    assert torch.equal(down[:-2], mel[2:]) and torch.equal(down[-2:], mel[-1:].expand(2, -1))
    # off (0 bins): the masks draw exactly what they drew before the option existed
    batch, n = mel[None].repeat(2, 1, 1), torch.tensor([10, 10])
    a = spec_augment(batch, n, torch.Generator().manual_seed(5))
    b = spec_augment(batch, n, torch.Generator().manual_seed(5), shift_bins=0)
    assert torch.equal(a, b) and not torch.equal(a, spec_augment(batch, n, torch.Generator().manual_seed(5), 4))
