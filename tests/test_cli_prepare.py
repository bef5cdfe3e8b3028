"""`rank-grpo prepare`: outputs are read by OpenRLHF's own loader and dataset classes."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from _paths import DATA
from rank_grpo_plugin.cli import main

os.environ["RANK_GRPO_PROGRESS"] = "0"

SAMPLE = DATA / "reddit_v2" / "sample.jsonl"


@pytest.fixture(scope="module")
def tiny_tok_dir(tmp_path_factory):
    from rank_grpo_plugin.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def _strategy(**data):
    """The attributes OpenRLHF's blending_datasets / PromptDataset / SFTDataset read from a strategy."""
    return SimpleNamespace(args=SimpleNamespace(data=SimpleNamespace(**data), use_ms=False),
                           print=lambda *a, **k: None, is_rank_0=lambda: True)


def _openrlhf_load(path):
    from openrlhf.datasets.utils import blending_datasets

    return blending_datasets(str(path), None, _strategy())


def test_rl_and_sft_rows_match_the_reward_contract(tmp_path, reddit_rows):
    rl, sft = tmp_path / "rl.jsonl", tmp_path / "sft.jsonl"
    assert main(["prepare", str(SAMPLE), "--rl", str(rl), "--sft", str(sft)]) == 0
    rl_rows = [json.loads(x) for x in rl.read_text().splitlines()]
    sft_rows = [json.loads(x) for x in sft.read_text().splitlines()]
    assert len(rl_rows) == len(sft_rows) == 100
    first = reddit_rows[0]
    assert rl_rows[0]["input"] == first["prompt"]
    label = json.loads(rl_rows[0]["label"])
    assert label == {"groundtruth": [["This Is Spinal Tap", 1984], ["A Mighty Wind", 2003],
                                     ["Waiting for Guffman", 1996]], "seen": ["Best in Show"]}
    assert sft_rows[0]["input"] == first["prompt"]
    assert sft_rows[0]["output"] == [{"role": "assistant", "content": first["completion"][0]["content"]}]


def test_openrlhf_prompt_and_sft_datasets_read_the_outputs(tmp_path, tiny_tok_dir):
    from openrlhf.datasets import PromptDataset, SFTDataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tok_dir)
    rl, sft = tmp_path / "rl.jsonl", tmp_path / "sft.json"
    assert main(["prepare", str(SAMPLE), "--rl", str(rl), "--sft", str(sft), "--limit", "6"]) == 0

    ds = PromptDataset(_openrlhf_load(rl), tok, _strategy(input_key="input", label_key="label",
                                                          apply_chat_template=True))
    assert len(ds) == 6
    _, prompt, label, _ = ds[0]
    assert prompt.startswith("<|im_start|>user\nPretend you are a movie recommender")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert json.loads(label)["seen"] == ["Best in Show"]

    sd = SFTDataset(_openrlhf_load(sft), tok, 4096, _strategy(input_key="input", output_key="output",
                                                              apply_chat_template=True), num_processors=1)
    assert len(sd) == 6
    assert sd.responses[0].startswith("A Mighty Wind (2003)\nThis Is Spinal Tap (1984)\n")
    assert sd.responses[0].rstrip("\n").endswith("Lady and the Tramp (1955)<|im_end|>")
    input_ids, _, loss_mask = sd[0]
    assert loss_mask.sum() > 100  # the 20-line target is trained on


def test_templated_prompts_with_a_tokenizer(tmp_path, tiny_tok_dir):
    from openrlhf.datasets import PromptDataset, SFTDataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tok_dir)
    rl, sft = tmp_path / "rl.jsonl", tmp_path / "sft.jsonl"
    assert main(["prepare", str(SAMPLE), "--rl", str(rl), "--sft", str(sft), "--limit", "3", "--apply-chat-template",
                 "--tokenizer", tiny_tok_dir, "--input-key", "prompt", "--label-key", "gt", "--output-key",
                 "target"]) == 0
    row = json.loads(rl.read_text().splitlines()[0])
    assert isinstance(row["prompt"], str) and row["prompt"].endswith("<|im_start|>assistant\n")
    ds = PromptDataset(_openrlhf_load(rl), tok, _strategy(input_key="prompt", label_key="gt",
                                                          apply_chat_template=False))
    assert ds[0][1] == row["prompt"] and "groundtruth" in json.loads(ds[0][2])
    sd = SFTDataset(_openrlhf_load(sft), tok, 4096, _strategy(input_key="prompt", output_key="target",
                                                              apply_chat_template=False), num_processors=1)
    assert sd.prompts[0] == row["prompt"]
    assert sd.responses[0].startswith("A Mighty Wind (2003)\n") and "<|im_end|>" in sd.responses[0]


def test_save_to_disk_and_json_inputs(tmp_path, reddit_rows):
    import datasets
    rows = [{k: r[k] for k in ("prompt", "seen_titles", "groundtruth_with_release_year")} for r in reddit_rows[:4]]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:3]),
                          "test": datasets.Dataset.from_list(rows[3:])}).save_to_disk(str(tmp_path / "dd"))
    out = tmp_path / "rl.jsonl"
    assert main(["prepare", str(tmp_path / "dd"), "--rl", str(out)]) == 2  # two splits: must choose
    assert not out.exists()
    assert main(["prepare", str(tmp_path / "dd"), "--split", "train", "--rl", str(out)]) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["input"] for g in got] == [r["prompt"] for r in rows[:3]]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert main(["prepare", str(tmp_path / "rows.json"), "--rl", str(tmp_path / "rl2.json")]) == 0
    got2 = json.loads((tmp_path / "rl2.json").read_text())  # a .json output is a JSON list
    assert [g["label"] for g in got2[:3]] == [g["label"] for g in got]
    assert json.loads(got2[3]["label"]) == {
        "groundtruth": [[t, int(y)] for t, y in rows[3]["groundtruth_with_release_year"]],
        "seen": rows[3]["seen_titles"]}


@pytest.mark.parametrize("field,value,message", [
    ("groundtruth_with_release_year", [["Heat", "19x5"]],
     "field 'groundtruth_with_release_year'[0]: year must be an integer or digit string, got '19x5'"),
    ("groundtruth_with_release_year", [], "field 'groundtruth_with_release_year': empty ground truth"),
    ("seen_titles", "Heat", "field 'seen_titles': expected a list of title strings"),
    ("prompt", [{"role": "robot", "content": "hi"}], "field 'prompt'[0].role: expected one of"),
    ("completion", "", "field 'completion': expected a non-empty string"),
])
def test_bad_row_names_file_line_and_field_and_writes_nothing(tmp_path, capsys, reddit_rows, field, value, message):
    rows = [dict(r) for r in reddit_rows[:3]]
    rows[1][field] = value
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rl, sft = tmp_path / "rl.jsonl", tmp_path / "sft.jsonl"
    rl.write_text("old\n")
    assert main(["prepare", str(src), "--rl", str(rl), "--sft", str(sft)]) == 2
    err = capsys.readouterr().err
    assert f"{src}: line 2: {message}" in err
    assert rl.read_text() == "old\n" and not sft.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl.jsonl", "rows.jsonl"]  # no temp files left


def test_missing_field_and_invalid_json_line(tmp_path, capsys, reddit_rows):
    src = tmp_path / "rows.jsonl"
    row = {k: v for k, v in reddit_rows[0].items() if k != "seen_titles"}
    src.write_text(json.dumps(reddit_rows[0]) + "\n" + json.dumps(row) + "\n")
    assert main(["prepare", str(src), "--rl", str(tmp_path / "o.jsonl")]) == 2
    assert f"{src}: line 2: field 'seen_titles' is missing" in capsys.readouterr().err
    assert main(["prepare", str(src), "--rl", str(tmp_path / "o.jsonl"), "--seen-field", ""]) == 0
    src.write_text(json.dumps(reddit_rows[0]) + "\n{not json\n")
    assert main(["prepare", str(src), "--rl", str(tmp_path / "p.jsonl")]) == 2
    assert f"{src}: line 2: not valid JSON" in capsys.readouterr().err
    assert main(["prepare", str(src)]) == 2  # nothing to write
