"""An offline tiny random Qwen2 checkpoint + byte-level BPE tokenizer, for CPU smoke runs and tests.

``build_tiny_model(out_dir)`` writes a complete Hugging Face checkpoint directory (``config.json``,
``model.safetensors``, ``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``) that
``transformers.AutoModelForCausalLM`` / ``AutoTokenizer``, vLLM and OpenRLHF load like any Qwen2 model:

* model: ``Qwen2ForCausalLM`` with random weights (seeded), ~3M parameters by default, head_dim 64
  (a size vLLM's CPU attention backend supports);
* tokenizer: byte-level BPE trained with ``tokenizers`` in about a second on movie-list text (catalog titles
  as ``"Title (Year)"`` lines and the Reddit-v2 sample prompts/completions shipped in
  :mod:`rank_grpo_plugin.resources`, plus a small embedded corpus), using Qwen2's pre-tokenizer split and NFC normaliser so ``")\\n"`` and
  ``"\\n\\n"`` merge like in the real Qwen vocabulary; ChatML chat template; EOS ``<|im_end|>``, PAD
  ``<|endoftext|>`` (distinct).

Deterministic for a given (seed, sizes, corpus) and cached: when ``out_dir`` already holds a complete build
with the same parameters it is returned without rebuilding. Nothing is downloaded.

Command line: ``python -m rank_grpo_plugin.tiny_model OUT_DIR [--seed N]``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from .files import atomic_paths
from .resources import RESOURCES

__all__ = ["build_tiny_model", "CHAT_TEMPLATE", "PRETOKENIZE_REGEX"]

# Qwen2's pre-tokenizer split (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX).
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML, as used by Qwen2.5-Instruct (without the default system prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]

_BUILD_VERSION = 1  # bump when the build recipe changes (invalidates caches)
_STAMP = "tiny_model_build.json"
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", _STAMP)

_EMBEDDED_CORPUS = """\
Pretend you are a movie recommender system.
I will give you a conversation between a user and you (a recommender system). Based on the conversation, you need \
to reply with 20 recommendations. List the standardized English title of each movie in each line in the form of \
"movie name" (release_year) with NO extra words or sentences.
Here is the conversation: USER: I loved Alien (1979) and The Thing (1982). Any other sci-fi horror?
The Matrix (1999)
Blade Runner (1982)
Heat (1995)
The Godfather (1972)
Pulp Fiction (1994)
Back to the Future (1985)
Spirited Away (2001)
Parasite (2019)
Mad Max: Fury Road (2015)
Amélie (2001)
"""




def _corpus_files(data_dir: Optional[Path]) -> List[Path]:
    if data_dir is None:
        return []
    files = []
    for sub in ("reddit_v2", "redial"):
        for name in ("catalog.jsonl", "sample.jsonl"):
            p = Path(data_dir) / sub / name
            if p.is_file():
                files.append(p)
    return files


def _text_of(obj) -> Iterable[str]:
    """Every string inside a JSON row (titles get rendered as 'Title (Year)' lines)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("title"), str) and "year" in obj:
            yield f"{obj['title']} ({obj['year']})"
            return
        for v in obj.values():
            yield from _text_of(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _text_of(v)
    elif isinstance(obj, str):
        yield obj


def _corpus(files: Sequence[Path]) -> List[str]:
    texts = [_EMBEDDED_CORPUS]
    for path in files:
        titles: List[str] = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                row = json.loads(line)
                if isinstance(row, dict) and "title" in row and "year" in row:
                    titles.append(f"{row['title']} ({row['year']})")
                else:
                    texts.extend(_text_of(row))
        # Catalog titles as 20-line lists, the shape the model must emit.
        for i in range(0, len(titles), 20):
            texts.append("\n".join(titles[i : i + 20]) + "\n")
    # Chat-formatted text so the template's pieces get merges too.
    texts.append("<|im_start|>user\nRecommend movies.<|im_end|>\n<|im_start|>assistant\nHeat (1995)\n")
    return texts


def _train_tokenizer(texts: Sequence[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return tok


def _params(seed, vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size,
            max_position_embeddings, files) -> dict:
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    return {
        "build_version": _BUILD_VERSION,
        "seed": seed,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "corpus_sha256": digest.hexdigest(),
    }


def _is_complete(out: Path, params: dict) -> bool:
    if not all((out / name).is_file() for name in _REQUIRED):
        return False
    try:
        return json.loads((out / _STAMP).read_text())["params"] == params
    except (ValueError, KeyError, OSError):
        return False


def build_tiny_model(
    out_dir,
    seed: int = 0,
    *,
    vocab_size: int = 4096,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int = 512,
    max_position_embeddings: int = 4096,
    data_dir=None,
    force: bool = False,
) -> str:
    """Build (or reuse) a tiny random Qwen2 checkpoint + tokenizer in ``out_dir``; return its path as str.

    ``data_dir``: folder with ``reddit_v2/`` and/or ``redial/`` (``catalog.jsonl``, ``sample.jsonl``) whose text
    trains the tokenizer; default: the package's shipped Reddit-v2 files (an embedded corpus is always included),
    so the same build comes out of every clone.
    ``vocab_size`` is the BPE target; the model's embedding is padded to a multiple of 64.
    """
    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}) and num_heads by "
            f"num_kv_heads ({num_kv_heads})"
        )
    out = Path(out_dir).resolve()
    data = Path(data_dir) if data_dir is not None else RESOURCES
    files = _corpus_files(data)
    params = _params(seed, vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size,
                     max_position_embeddings, files)
    if not force and _is_complete(out, params):
        return str(out)
    if out.exists() and any(out.iterdir()) and not (out / _STAMP).is_file():
        raise FileExistsError(f"{out} exists, is not empty and is not a tiny-model build; refusing to overwrite it")

    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    with atomic_paths(out) as (tmp_dir,):
        tmp = Path(tmp_dir)
        tmp.mkdir()
        tmp.chmod(0o755)  # readable by every process that loads the model, whatever the umask
        tok = _train_tokenizer(_corpus(files), vocab_size)
        hf_tok = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token=EOS_TOKEN,
            pad_token=PAD_TOKEN,
            unk_token=None,
            bos_token=None,
            model_max_length=max_position_embeddings,
            chat_template=CHAT_TEMPLATE,
            clean_up_tokenization_spaces=False,
        )
        hf_tok.save_pretrained(str(tmp))
        # The chat template must travel inside tokenizer_config.json too (older transformers/vLLM read it there).
        cfg_path = tmp / "tokenizer_config.json"
        tcfg = json.loads(cfg_path.read_text())
        tcfg["chat_template"] = CHAT_TEMPLATE
        tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(tcfg, indent=2, sort_keys=True) + "\n")

        n_tok = len(hf_tok)
        padded = ((n_tok + 63) // 64) * 64
        pad_id = hf_tok.convert_tokens_to_ids(PAD_TOKEN)
        eos_id = hf_tok.convert_tokens_to_ids(EOS_TOKEN)
        bos_id = hf_tok.convert_tokens_to_ids(BOS_TOKEN)
        config = Qwen2Config(
            vocab_size=padded,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=False,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            torch_dtype="float32",
        )
        config.architectures = ["Qwen2ForCausalLM"]
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = Qwen2ForCausalLM(config).float()
        finally:
            torch.random.set_rng_state(state)
        model.generation_config.eos_token_id = eos_id
        model.generation_config.pad_token_id = pad_id
        model.generation_config.bos_token_id = bos_id
        model.save_pretrained(str(tmp), safe_serialization=True)
        n_params = sum(p.numel() for p in model.parameters())
        (tmp / _STAMP).write_text(
            json.dumps({"params": params, "num_parameters": n_params, "tokenizer_size": n_tok,
                        "corpus_files": [str(p) for p in files]}, indent=2, sort_keys=True) + "\n"
        )
    return str(out)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    print(build_tiny_model(a.out_dir, seed=a.seed, data_dir=a.data_dir, force=a.force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
