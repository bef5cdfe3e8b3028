"""Fixtures for the OpenRLHF integration tests (real OpenRLHF 0.11.2 classes, CPU only).

Never ``import tests``: the openrlhf wheel installs a top-level package of that name.
``RANK_GRPO_TEST_EXPECT_REGISTRY=1`` (set by test_patches.py when it re-runs these tests against a copy of OpenRLHF
with the upstream diff of ``patches/`` applied) makes the tests assert the registry path instead of the patches.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

torch.set_num_threads(1)

from rank_grpo_plugin.resources import REDDIT_V2_CATALOG, REDDIT_V2_SAMPLE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXPECT_REGISTRY = os.environ.get("RANK_GRPO_TEST_EXPECT_REGISTRY") == "1"


def pytest_collection_modifyitems(config, items):
    """On the patched copy (EXPECT_REGISTRY) the plugin patches nothing: tests of the runtime patches do not apply
    there and are deselected (reported as such), never skipped."""
    if not EXPECT_REGISTRY:
        return
    patch_only = [item for item in items if item.get_closest_marker("patch_only")]
    if patch_only:
        config.hook.pytest_deselected(items=patch_only)
        items[:] = [item for item in items if not item.get_closest_marker("patch_only")]


@pytest.fixture(scope="session")
def expect_registry() -> bool:
    return EXPECT_REGISTRY


@pytest.fixture(scope="session")
def catalog_path() -> str:
    return str(REDDIT_V2_CATALOG)


@pytest.fixture(scope="session")
def sample_rows():
    with open(REDDIT_V2_SAMPLE, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


# --------------------------------------------------------------------------- OpenRLHF's real CLI, in process
def _train_ppo_ray_main_block():
    spec = importlib.util.find_spec("openrlhf.cli.train_ppo_ray")
    source = Path(spec.origin).read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.get_source_segment(source, node.test):
            return spec.origin, node.body
    raise AssertionError("no `if __name__ == '__main__'` block in openrlhf/cli/train_ppo_ray.py")


def run_openrlhf_cli(argv):
    """Run the real ``if __name__ == "__main__"`` block of openrlhf/cli/train_ppo_ray.py (parser, OpenRLHF's own
    validation) with ``train`` replaced by a stub; return the hierarchical args it would train with.

    Raises SystemExit like the real script on a bad flag. The block's imports are stdlib plus OpenRLHF's
    ``hierarchize``, so this is fast and does not start Ray.
    """
    import openrlhf  # noqa: F401  (wakes the plugin exactly like the script's own imports do)

    origin, body = _train_ppo_ray_main_block()
    captured = []
    namespace = {
        "__name__": "__rank_grpo_test_main__",
        "argparse": argparse,
        "os": os,
        "datetime": datetime.datetime,
        "train": captured.append,
    }
    code = compile(ast.Module(body=body, type_ignores=[]), origin, "exec")
    old_argv = sys.argv
    sys.argv = ["train_ppo_ray.py", *argv]
    try:
        exec(code, namespace)
    finally:
        sys.argv = old_argv
    assert len(captured) == 1
    return captured[0]


BASE_ARGV = [
    "--actor.model_name_or_path", "tiny",
    "--vllm.num_engines", "1",
    "--rollout.n_samples_per_prompt", "4",
    "--rollout.batch_size", "2",
    "--train.batch_size", "8",
    "--actor.num_gpus_per_node", "1",
    "--ref.num_gpus_per_node", "1",
]


@pytest.fixture
def cli():
    return run_openrlhf_cli


# --------------------------------------------------------------------------- experiences through OpenRLHF's code
def make_response(tokenizer, prompt: str, completion: str, label, reward_out: dict, i: int = 0, eos: bool = True):
    """A rollout response dict in the shape OpenRLHF's SingleTurnAgentExecutor returns."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    action_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if eos:
        action_ids = action_ids + [tokenizer.eos_token_id]
    tokens = prompt_ids + action_ids
    return {
        "prompt": prompt,
        "label": label,
        "images": None,
        "mm_train_inputs": None,
        "observation_tokens": tokens,
        "action_ranges": [(len(prompt_ids), len(tokens))],
        "rollout_log_probs": None,
        "truncated": not eos,
        "reward": reward_out["rewards"][i],
        "scores": reward_out["scores"][i],
        "extra_logs": {k: v[i] for k, v in reward_out["extra_logs"].items()},
    }


def rollout_experiences(tokenizer, prompts, completions, labels, options, eos=None):
    """Score with the plugin's reward_func and turn each response into a real OpenRLHF Experience with
    ``SamplesGenerator._process_response_into_experience`` (OpenRLHF 0.11.2 code; it does not use ``self``)."""
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    from rank_grpo_plugin.openrlhf.reward import reward_func

    out = []
    for j, (p, c, l) in enumerate(zip(prompts, completions, labels)):
        query = p + c + tokenizer.eos_token
        scored = reward_func([query], [p], [l], options=options)
        resp = make_response(tokenizer, p, c, l, scored, 0, eos=True if eos is None else eos[j])
        out.append(SamplesGenerator._process_response_into_experience(None, resp, max_len=4096))
    return out


def fake_strategy(args):
    return SimpleNamespace(args=args)


@pytest.fixture
def helpers():
    return SimpleNamespace(
        run_cli=run_openrlhf_cli,
        base_argv=list(BASE_ARGV),
        make_response=make_response,
        rollout_experiences=rollout_experiences,
        fake_strategy=fake_strategy,
    )
