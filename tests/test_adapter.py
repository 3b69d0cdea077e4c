"""The AudioLLM adapter: module paths in both transformers layouts, prompts, positions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ard_core.models import ModelConfig, load_audiollm
from ard_core.models.qwen2_audio import audio_token_id_of, resolve_text_modules
from conftest import tone


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
        self.norm = nn.LayerNorm(2)


def test_resolve_transformers5_layout():
    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio_tower = nn.Identity()
            self.language_model = _Decoder()

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Inner()
            self.lm_head = nn.Linear(2, 5)

    m = Outer()
    mods = resolve_text_modules(m)
    assert mods.layers is m.model.language_model.layers
    assert mods.final_norm is m.model.language_model.norm
    assert mods.lm_head is m.lm_head


def test_resolve_transformers4_layout():
    class CausalLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = _Decoder()
            self.lm_head = nn.Linear(2, 5)

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio_tower = nn.Identity()
            self.language_model = CausalLM()

    m = Outer()
    mods = resolve_text_modules(m)
    assert mods.layers is m.language_model.model.layers
    assert mods.final_norm is m.language_model.model.norm
    assert mods.lm_head is m.language_model.lm_head


def test_resolve_unknown_layout_names_both_paths():
    with pytest.raises(TypeError, match="model.language_model.model.layers"):
        resolve_text_modules(nn.Linear(2, 2))


def test_audio_token_id_either_name():
    class C5:
        audio_token_id = 7

    class C4:
        audio_token_index = 9

    assert audio_token_id_of(C5()) == 7 and audio_token_id_of(C4()) == 9


def test_installed_transformers_layout(tiny_llm):
    """On the installed transformers, the resolved modules are the model's own."""
    import transformers

    model = tiny_llm.model
    if int(transformers.__version__.split(".")[0]) >= 5:
        assert tiny_llm.layers is model.model.language_model.layers
        assert tiny_llm.lm_head is model.lm_head
    else:
        assert tiny_llm.layers is model.language_model.model.layers
    assert tiny_llm.n_layers == 4 and tiny_llm.d_model == 32


def test_lm_head_of_final_norm_gives_model_logits(tiny_llm):
    prompt = tiny_llm.build_prompt("What is the gender of the speaker in the speech?", "The speaker's gender is")
    inputs = tiny_llm.prepare([tone(1.0)], [prompt])
    with torch.inference_mode():
        out = tiny_llm.model(**inputs, output_hidden_states=True)
        logits = tiny_llm.lm_head(out.hidden_states[-1])
    torch.testing.assert_close(logits, out.logits)


def test_prompt_with_assistant_prefix_ends_on_prefix(tiny_llm):
    p = tiny_llm.build_prompt("What is the gender of the speaker in the speech?", "The speaker's gender is")
    assert p.endswith("<|im_start|>assistant\nThe speaker's gender is")
    assert p.count("<|im_end|>") == 2  # system and user turns are closed, the assistant turn is open
    assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>" in p
    plain = tiny_llm.build_prompt("Generate a detailed caption for the audio clip")
    assert plain.endswith("<|im_start|>assistant\n")


def test_audio_positions_are_contiguous_and_left_padded(tiny_llm):
    p = tiny_llm.build_prompt("Generate a detailed caption for the audio clip")
    inputs = tiny_llm.prepare([tone(0.5), tone(1.5)], [p, p])
    mask = tiny_llm.audio_positions(inputs["input_ids"])
    assert inputs["attention_mask"][:, -1].tolist() == [1, 1]  # left padding keeps the last position real
    for row in mask:
        idx = row.nonzero().flatten()
        assert idx.numel() > 0 and (idx[-1] - idx[0] + 1) == idx.numel()


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no adapter for model_type"):
        load_audiollm(tmp_path, family="salmonn")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_audio"}')
    with pytest.raises(OSError, match="could not load Qwen2-Audio model"):
        load_audiollm(tmp_path)


def test_model_config_validation():
    from ard_core.config import ConfigError

    with pytest.raises(ConfigError, match="dtype"):
        ModelConfig(dtype="int3")
    with pytest.raises(ConfigError, match="family"):
        ModelConfig(family="nope")
