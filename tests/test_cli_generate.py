"""`rank-grpo evaluate --model`: real greedy generation with a tiny random model (HF path; vLLM in a slow test)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rank_grpo_plugin.cli import main
os.environ["RANK_GRPO_PROGRESS"] = "0"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rank_grpo_plugin.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture()
def mini(tmp_path):
    p1 = [{"role": "user", "content": "I liked Alien (1979). 20 movies please."}]
    p2 = [{"role": "user", "content": "Something like Heat (1995)?"}]
    rows = [
        {"prompt": p1, "seen_titles": ["Alien"], "groundtruth_with_release_year": [["Aliens", "1986"]]},
        {"prompt": p2, "seen_titles": [], "groundtruth_with_release_year": [["Ronin", "1998"]]},
        {"prompt": p1, "seen_titles": ["Alien"], "groundtruth_with_release_year": [["Jaws", "1975"]]},
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cat = tmp_path / "cat.jsonl"
    cat.write_text("".join(json.dumps({"title": t, "year": y}) + "\n"
                           for t, y in [("Aliens", 1986), ("Ronin", 1998), ("Jaws", 1975)]))
    return str(data), str(cat), [p1, p2]


def _greedy_reference(model_dir, messages, max_new_tokens):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_hf_generation_once_per_conversation_and_greedy(tmp_path, tiny, mini):
    data, cat, prompts = mini
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", tiny, "--backend", "hf", "--data", data, "--catalog", cat,
                 "--max-new-tokens", "24", "--batch-size", "2", "--out", str(out), "--save-rows", "--no-plot"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["config"]["backend"] == "hf" and res["config"]["conversations"] == 2
    assert res["summary"]["rows"] == 3 and res["timing"]["generation_s"] > 0
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["prompt"] for g in gens] == prompts  # one generation per unique conversation, first-seen order
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert rows[0]["completion"] == rows[2]["completion"] == gens[0]["completion"]
    # batched, left-padded generation equals an unbatched greedy reference
    for g in gens:
        assert g["completion"] == _greedy_reference(tiny, g["prompt"], 24)
    # the saved generations evaluate to the same figures through --predictions
    out2 = tmp_path / "ev2"
    assert main(["evaluate", "--predictions", str(out / "generations.jsonl"), "--data", data, "--catalog", cat,
                 "--out", str(out2), "--no-plot"]) == 0
    assert json.loads((out2 / "metrics.json").read_text())["summary"] == res["summary"]


def test_model_must_be_a_local_checkpoint(tmp_path, mini, capsys):
    data, cat, _ = mini
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", data, "--catalog", cat,
                 "--out", str(tmp_path / "o")]) == 2
    assert "not a Hugging Face checkpoint directory" in capsys.readouterr().err


@pytest.mark.slow
def test_vllm_generation_in_a_subprocess(tmp_path, tiny, mini):
    data, cat, prompts = mini
    out = tmp_path / "ev"
    env = dict(os.environ, HF_HUB_OFFLINE="1", RANK_GRPO_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-m", "rank_grpo_plugin.cli", "evaluate", "--model", tiny, "--backend",
                           "vllm", "--dtype", "float32", "--data", data, "--catalog", cat, "--max-new-tokens", "16",
                           "--out", str(out), "--no-plot"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "metrics.json").read_text())
    assert res["config"]["backend"] == "vllm"
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["prompt"] for g in gens] == prompts and all(isinstance(g["completion"], str) for g in gens)


@pytest.mark.slow
def test_smollm2_conversion_from_gguf(tmp_path, monkeypatch):
    from rank_grpo_plugin.cli.generate import prepare_smollm2

    monkeypatch.setenv("RANK_GRPO_CACHE", str(tmp_path))
    path = prepare_smollm2()
    assert path == tmp_path / "SmolLM2-135M-Instruct"
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    cfg = AutoConfig.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert cfg.eos_token_id == tok.eos_token_id and cfg.pad_token_id == tok.pad_token_id != cfg.eos_token_id
    text = _greedy_reference(str(path), [{"role": "user", "content": "Name a movie like Heat (1995)."}], 8)
    assert isinstance(text, str) and text.strip()
    assert prepare_smollm2() == path  # cached: second call does not convert again


def test_sampled_evaluation_mean_and_sd_over_samples(tmp_path, tiny, mini):
    import statistics

    from rank_grpo_plugin.recsys.catalog import Catalog
    from rank_grpo_plugin.recsys.evaluation import evaluate_list

    data, cat, prompts = mini
    args = ["evaluate", "--model", tiny, "--backend", "hf", "--data", data, "--catalog", cat, "--max-new-tokens",
            "16", "--batch-size", "4", "--temperature", "1.0", "--num-samples", "3", "--no-plot"]
    assert main(args + ["--seed", "7", "--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--seed", "7", "--out", str(tmp_path / "b")]) == 0
    assert main(args + ["--seed", "8", "--out", str(tmp_path / "c")]) == 0
    gens = [[json.loads(l) for l in (tmp_path / d / "generations.jsonl").read_text().splitlines()] for d in "abc"]
    assert gens[0] == gens[1] and gens[0] != gens[2]  # reproducible per seed
    assert len(gens[0]) == 2 and all(len(g["completion"]) == 3 for g in gens[0])  # 3 lists per conversation
    res = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert res["config"]["decoding"] == "sampled (T=1.0, n=3)" and res["summary"]["rows"] == 9
    # independent recomputation: per-sample means over the 3 data rows, then mean and sd over the 3 samples
    rows = [json.loads(l) for l in Path(data).read_text().splitlines()]
    by_prompt = {json.dumps(g["prompt"], sort_keys=True): g["completion"] for g in gens[0]}
    catalog = Catalog.from_file(cat)
    per_sample = []
    for s in range(3):
        vals = [evaluate_list(by_prompt[json.dumps(r["prompt"], sort_keys=True)][s],
                              r["groundtruth_with_release_year"], r["seen_titles"], catalog).metrics["rank/ndcg@20"]
                for r in rows]
        per_sample.append(sum(vals) / len(vals))
    spread = res["samples"]
    assert spread["n"] == 3
    assert [m["rank/ndcg@20"] for m in spread["metrics_per_sample"]] == pytest.approx(per_sample)
    assert spread["metrics_sd"]["rank/ndcg@20"] == pytest.approx(statistics.stdev(per_sample))
    assert res["summary"]["metrics"]["rank/ndcg@20"] == pytest.approx(statistics.mean(per_sample))
    # the saved sampled lists evaluate to the same figures through --predictions
    assert main(["evaluate", "--predictions", str(tmp_path / "a" / "generations.jsonl"), "--data", data,
                 "--catalog", cat, "--out", str(tmp_path / "a2"), "--no-plot"]) == 0
    again = json.loads((tmp_path / "a2" / "metrics.json").read_text())
    assert again["summary"] == res["summary"] and again["samples"] == res["samples"]
    # greedy with several samples is refused, naming the flags
    assert main(["evaluate", "--model", tiny, "--backend", "hf", "--data", data, "--catalog", cat,
                 "--num-samples", "2", "--out", str(tmp_path / "d")]) == 2
