"""Shared fixtures for the core tests (no OpenRLHF needed).

Never ``import tests``: the openrlhf wheel installs a top-level package of that name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"shared data missing: {path} (expected ../shared/data relative to the project root)")
    return path


@pytest.fixture(scope="session")
def reddit_rows():
    with open(_need(DATA / "reddit_v2" / "sample.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def reddit_catalog():
    from rank_grpo_plugin import Catalog

    return Catalog.from_file(_need(DATA / "reddit_v2" / "catalog.jsonl"))


# Qwen2's pre-tokenizer split: punctuation may absorb following newlines (")\n"), newline runs merge ("\n\n").
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@pytest.fixture(scope="session")
def bpe_tokenizer(reddit_rows):
    """A real byte-level BPE tokenizer (Qwen2-style split) trained offline on the sample lists, wrapped as a
    transformers fast tokenizer. Its vocabulary has merged newline tokens such as ')\\n' and '\\n\\n'."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    corpus = [r["completion"][0]["content"] for r in reddit_rows]
    corpus += [c.replace("\n", "\n\n") for c in corpus[:20]] + [c + "\n" for c in corpus[:20]]
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
