"""rank_grpo_plugin.tiny_model: offline tiny Qwen2 + BPE tokenizer (needs transformers/tokenizers, not OpenRLHF)."""
from __future__ import annotations

import json
import os
import time

import pytest

from rank_grpo_plugin.tiny_model import build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def test_checkpoint_loads_and_is_tiny(tiny):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(tiny)
    assert cfg.model_type == "qwen2"
    model = AutoModelForCausalLM.from_pretrained(tiny)
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n <= 5_000_000, n
    assert cfg.hidden_size // cfg.num_attention_heads in (32, 64, 128)  # vLLM CPU attention head sizes
    assert os.path.isfile(os.path.join(tiny, "model.safetensors"))
    with torch.no_grad():
        out = model(torch.tensor([[1, 5, 7, 9]])).logits
    assert out.shape == (1, 4, cfg.vocab_size) and torch.isfinite(out).all()


def test_tokenizer_roundtrip_qwen_split_and_specials(tiny):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    raw = Tokenizer.from_file(os.path.join(tiny, "tokenizer.json"))
    text = "The Matrix (1999)\nHeat (1995)\n\nAmélie (2001)\n"
    assert tok(text)["input_ids"] == raw.encode(text).ids
    assert tok.decode(tok(text)["input_ids"]) == text
    pieces = tok.tokenize(text)
    assert ")Ċ" in pieces and ")ĊĊ" in pieces  # Qwen2 split: punctuation absorbs following newlines
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert len(tok) <= json.load(open(os.path.join(tiny, "config.json")))["vocab_size"]
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_cached_and_deterministic(tiny, tmp_path):
    stamp = os.path.join(tiny, "tiny_model_build.json")
    mtime = os.path.getmtime(stamp)
    t0 = time.perf_counter()
    assert build_tiny_model(tiny, seed=0) == tiny
    assert time.perf_counter() - t0 < 1.0
    assert os.path.getmtime(stamp) == mtime  # not rebuilt
    again = build_tiny_model(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json"):
        with open(os.path.join(tiny, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
            assert a.read() == b.read(), name


def test_refuses_foreign_dir(tmp_path):
    (tmp_path / "x.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path, seed=0)
