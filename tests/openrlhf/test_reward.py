"""The catalog reward under OpenRLHF's reward-function contract (loaded by path, like OpenRLHF does)."""
from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from rank_grpo_plugin.data import LabelError, parse_label
from rank_grpo_plugin.openrlhf import flags
from rank_grpo_plugin.openrlhf.reward import IN_CATALOG_KEY, LABEL_ERROR_KEY, response_text, hit_keys
from rank_grpo_plugin.options import OPTIONS_ENV, RankGRPOOptions


def _label(row):
    return json.dumps({"groundtruth": row["groundtruth_with_release_year"], "seen": row["seen_titles"]})


def _load_like_openrlhf():
    spec = importlib.util.spec_from_file_location("reward_func", flags.REWARD_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


def test_reward_contract_vector_and_ndcg(sample_rows, catalog_path, monkeypatch):
    opts = RankGRPOOptions(catalog=catalog_path, num_ranks=20)
    monkeypatch.setenv(OPTIONS_ENV, opts.to_json())
    reward_func = _load_like_openrlhf()
    row = sample_rows[0]
    prompt = "PROMPT<|im_start|>assistant\n"
    completion = row["completion"][0]["content"]
    out = reward_func([prompt + completion + "<|im_end|>"], [prompt], [_label(row)])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    hits = torch.stack([out["extra_logs"][k] for k in hit_keys(20)], dim=1)
    assert hits.shape == (1, 20)
    # SFT target lists contain the ground truth: rank-aligned hits, NDCG@20 as the scalar
    from rank_grpo_plugin import catalog_hits, ndcg_at_k
    from rank_grpo_plugin.recsys.catalog import Catalog

    want = catalog_hits(completion, row["groundtruth_with_release_year"], row["seen_titles"],
                        Catalog.from_file(catalog_path), k=20)
    assert hits[0].tolist() == [float(h) for h in want] and sum(want) > 0
    assert out["rewards"][0].item() == pytest.approx(ndcg_at_k(want, len(row["groundtruth_with_release_year"]), 20))
    assert out["scores"][0].item() == out["rewards"][0].item()
    assert out["extra_logs"][LABEL_ERROR_KEY][0].item() == 0.0
    assert 0.0 < out["extra_logs"][IN_CATALOG_KEY][0].item() <= 1.0
    # the dict crosses Ray with zero-copy tensor serialisation: only standalone contiguous tensors survive it
    for t in [out["rewards"], out["scores"], *out["extra_logs"].values()]:
        assert t.is_contiguous() and t.storage_offset() == 0
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


@pytest.mark.parametrize(
    "garbage",
    ["", "\n" * 500, "\x00\xff\ud800 (1999)", "(((( (2020)\n" * 30, "A" * 100000, "<|im_end|>", "1. (1999)\n-\n*"],
)
def test_any_model_output_only_earns_zero(sample_rows, catalog_path, garbage):
    from rank_grpo_plugin.openrlhf.reward import reward_func

    opts = RankGRPOOptions(catalog=catalog_path, num_ranks=20)
    out = reward_func([garbage], ["P"], [_label(sample_rows[0])], options=opts)
    assert out["rewards"].shape == (1,)
    assert out["extra_logs"][LABEL_ERROR_KEY][0].item() == 0.0
    assert float(out["rewards"][0]) >= 0.0


@pytest.mark.parametrize(
    "label, message",
    [
        ("", "empty label"),
        ("not json", "not valid JSON"),
        ('["a"]', "JSON object"),
        ('{"groundtruth": [["Heat"]]}', "groundtruth[0]"),
        ('{"groundtruth": [["Heat", "nineteen"]]}', "groundtruth[0]"),
        ('{"groundtruth": [], "seen": "Heat"}', "'seen'"),
    ],
)
def test_malformed_label_is_flagged_and_named(catalog_path, label, message):
    from rank_grpo_plugin.openrlhf.reward import reward_func

    with pytest.raises(LabelError, match="sample 7"):
        parse_label(label, where="sample 7")
    with pytest.raises(LabelError, match=re.escape(message)):
        parse_label(label)
    out = reward_func(["x"], ["p"], [label], options=RankGRPOOptions(catalog=catalog_path))
    assert out["extra_logs"][LABEL_ERROR_KEY][0].item() == 1.0 and out["rewards"][0].item() == 0.0


def test_label_forms_and_response_text():
    gt, seen = parse_label({"groundtruth_with_release_year": [["Heat", "1995"]], "seen_titles": ["Alien"]})
    assert gt == [["Heat", "1995"]] and seen == ["Alien"]
    assert parse_label('{"groundtruth": [["Heat", 1995]]}') == ([["Heat", 1995]], [])
    assert response_text("PA\nB (1999)<|im_end|>", "P") == "A\nB (1999)"
    body = "x" * 70 + "PROMPT-TAIL"  # a tokenizer round trip changed the prompt's start, not its end
    assert response_text("zz" + body + "Heat (1995)</s>", "yy" + body) == "Heat (1995)"
