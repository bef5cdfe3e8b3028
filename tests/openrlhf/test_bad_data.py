"""Bad data stops a run with one clear error, model output never does: the label validators on
every bad label kind, the launcher's check of a local prompt dataset (OpenRLHF's real parser, in process: no Ray),
the reward / estimator path for datasets the launcher cannot read, and the catalog (missing, empty, changed during
the run). The same bad files through the real launcher on CPU: tests/cpu_backend/test_cpu_faults.py."""
from __future__ import annotations

import json
import os
import re
import shutil
from types import SimpleNamespace

import pytest
import torch

from rank_grpo_plugin.data import MAX_LABEL_CHARS, DataError, LabelError, check_label_file, parse_label
from rank_grpo_plugin.options import OPTIONS_ENV, RankGRPOOptions

GOOD = {"groundtruth": [["Heat", 1995], ["The Matrix", "1999"]], "seen": ["Alien"]}

# (name, the label as stored in the dataset's "label" field, what the error must say about it)
BAD_LABELS = [
    ("not_json", "Heat (1995)", "label is not valid JSON"),
    ("no_groundtruth", json.dumps({"seen": ["Alien"]}), "label has no 'groundtruth'"),
    ("year_not_a_number", json.dumps({"groundtruth": [["Heat", "nineteen"]], "seen": []}),
     "groundtruth[0]: year must be an integer or digit string, got 'nineteen'"),
    ("empty_groundtruth", json.dumps({"groundtruth": [], "seen": []}), "'groundtruth' is empty"),
    ("huge", json.dumps({"groundtruth": [[f"Movie {i}", 2000] for i in range(4000)], "seen": []}),
     f"over the limit of {MAX_LABEL_CHARS:,}"),
    ("empty_title", json.dumps({"groundtruth": [[" ", 1999]]}), "groundtruth[0]: title must be a non-empty string"),
    ("not_an_object", json.dumps([["Heat", 1995]]), "label must be a JSON object"),
]


def write_prompts(path, labels, input_key="input", label_key="label"):
    """A prompt dataset as `rank-grpo prepare --rl` writes it, one row per label (JSONL)."""
    rows = [{input_key: [{"role": "user", "content": f"something like Ronin? ({i})"}], label_key: label}
            for i, label in enumerate(labels)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------------------------------- validators
@pytest.mark.parametrize("name, label, message", BAD_LABELS, ids=[b[0] for b in BAD_LABELS])
def test_every_bad_label_kind_is_named(name, label, message):
    with pytest.raises(LabelError) as err:
        parse_label(label, where="f.jsonl: line 3: field 'label'")
    assert str(err.value).startswith("f.jsonl: line 3: field 'label': ") and message in str(err.value)
    with pytest.raises(LabelError, match=re.escape(message)):  # the decoded object, as a dataset may hold it
        parse_label(json.loads(label) if name != "not_json" else label)


def test_good_labels_and_the_size_limit_edge():
    assert parse_label(json.dumps(GOOD)) == ([["Heat", 1995], ["The Matrix", "1999"]], ["Alien"])
    assert parse_label(GOOD)[1] == ["Alien"]
    pad = "x" * (MAX_LABEL_CHARS - len(json.dumps({"groundtruth": [["", 1999]]})))
    at_limit = json.dumps({"groundtruth": [[pad, 1999]]})
    assert len(at_limit) == MAX_LABEL_CHARS and parse_label(at_limit)[0][0][0] == pad
    with pytest.raises(LabelError, match="over the limit"):
        parse_label(json.dumps({"groundtruth": [[pad + "x", 1999]]}))


def test_check_label_file_names_file_row_and_field(tmp_path):
    labels = [json.dumps(GOOD)] + [b[1] for b in BAD_LABELS] + [json.dumps(GOOD)]
    path = write_prompts(tmp_path / "rl.jsonl", labels)
    with pytest.raises(DataError) as err:
        check_label_file(path, "label", "input")
    text = str(err.value)
    assert text.startswith(f"{len(BAD_LABELS)} bad row(s) of {len(labels)} in {path}:")
    for line, (_, _, message) in enumerate(BAD_LABELS, 2):
        assert f"{path}: line {line}: field 'label': " in text and message in text
    assert f"line 1:" not in text and f"line {len(labels)}:" not in text
    assert check_label_file(path, "label", limit=1) == 1  # only the rows OpenRLHF uses (--data.max_samples)
    # a row without the field, a row that is not an object, a line that is not JSON, a JSON-list file
    (tmp_path / "rows.jsonl").write_text(json.dumps({"input": "x", "lbl": "{}"}) + "\n[1]\n")
    with pytest.raises(DataError, match=r"line 1: field 'label' is missing.*\n.*line 2: expected a JSON object"):
        check_label_file(str(tmp_path / "rows.jsonl"), "label")
    (tmp_path / "broken.jsonl").write_text(json.dumps({"input": "x", "label": json.dumps(GOOD)}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"broken.jsonl: line 2: not valid JSON"):
        check_label_file(str(tmp_path / "broken.jsonl"), "label")
    (tmp_path / "rows.json").write_text(json.dumps([{"input": "x", "label": GOOD}, {"input": "y", "label": {}}]))
    with pytest.raises(DataError, match=r"rows.json: row 2: field 'label': label has no 'groundtruth'"):
        check_label_file(str(tmp_path / "rows.json"), "label")


# ------------------------------------------------------------------------------------- the launcher, before Ray
def _launch(helpers, catalog, *extra):
    return helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog",
                                                str(catalog), "--data.input_key", "input", *extra])


@pytest.mark.parametrize("name, label, message", BAD_LABELS, ids=[b[0] for b in BAD_LABELS])
def test_launcher_refuses_a_bad_label_before_ray(helpers, catalog_path, tmp_path, capsys, name, label, message):
    path = write_prompts(tmp_path / f"{name}.jsonl", [json.dumps(GOOD), json.dumps(GOOD), label])
    with pytest.raises(SystemExit) as exc:
        _launch(helpers, catalog_path, "--data.prompt_dataset", path, "--data.label_key", "label")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--data.prompt_dataset {path}: 1 bad row(s) of 3 in {path}:" in err
    assert f"{path}: line 3: field 'label': " in err and message in err, err[-2000:]


def test_launcher_dataset_rules(helpers, catalog_path, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    good = write_prompts(tmp_path / "good.jsonl", [json.dumps(GOOD)] * 3)
    bad = write_prompts(tmp_path / "bad.jsonl", [json.dumps(GOOD), "nope"])
    args = _launch(helpers, catalog_path, "--data.prompt_dataset", good, "--data.label_key", "label")
    assert args.data.prompt_dataset == good
    # the rows OpenRLHF will not use are not checked; nor are datasets this process cannot read
    _launch(helpers, catalog_path, "--data.prompt_dataset", bad, "--data.label_key", "label", "--data.max_samples", "1")
    _launch(helpers, catalog_path, "--data.prompt_dataset", "someone/hub_dataset,later.jsonl", "--data.label_key", "l")
    # several files (OpenRLHF's comma list with @data_dir) and the eval dataset: every problem at once
    with pytest.raises(SystemExit):
        _launch(helpers, catalog_path, "--data.prompt_dataset", f"{good},{bad}@x", "--eval.dataset", bad,
                "--data.label_key", "label")
    err = capsys.readouterr().err
    assert f"--data.prompt_dataset {bad}: 1 bad row(s) of 2" in err and f"--eval.dataset {bad}: 1 bad row(s)" in err
    assert f"{bad}: line 2: field 'label': label is not valid JSON" in err
    with pytest.raises(SystemExit):  # the catalog reward without a label field
        _launch(helpers, catalog_path, "--data.prompt_dataset", good)
    assert "give --data.label_key" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a GRPO baseline scored by the catalog reward reads the same labels
        helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "group_norm", "--rank_grpo.catalog",
                                             catalog_path, "--data.prompt_dataset", bad, "--data.label_key", "label"])
    assert f"{bad}: line 2: field 'label'" in capsys.readouterr().err
    # another reward reads its own labels: nothing of ours is checked
    helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "group_norm", "--reward.remote_url", "r.py",
                                         "--data.prompt_dataset", bad, "--data.label_key", "label"])


# ----------------------------------------------------------------------------------------------------- catalog
def test_catalog_missing_or_empty_at_launch(helpers, tmp_path, capsys):
    for path, message in [(tmp_path / "nope.jsonl", "no such file"), (tmp_path / "empty.jsonl", "empty catalog")]:
        if path.name == "empty.jsonl":
            path.write_text("\n")
        with pytest.raises(SystemExit) as exc:
            _launch(helpers, path)
        assert exc.value.code == 2
        assert f"--rank_grpo.catalog {path}: {message}" in capsys.readouterr().err


def test_launcher_records_the_catalog_hash(helpers, catalog_path, monkeypatch):
    from rank_grpo_plugin.scoring import file_sha256

    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    _launch(helpers, catalog_path)
    opts = RankGRPOOptions.from_json(os.environ[OPTIONS_ENV])
    assert opts.catalog_sha256 == file_sha256(catalog_path)


@pytest.fixture
def own_catalog(catalog_path, tmp_path):
    """A private copy of the shipped catalog (the per-process cache is keyed by path)."""
    path = tmp_path / "catalog.jsonl"
    shutil.copy(catalog_path, path)
    return str(path)


def test_catalog_changed_during_the_run(own_catalog):
    from rank_grpo_plugin.scoring import CatalogChangedError, check_catalog, file_sha256, load_catalog

    sha = file_sha256(own_catalog)
    cat = load_catalog(own_catalog, sha)
    assert load_catalog(own_catalog, sha) is cat and check_catalog(own_catalog) == sha
    os.utime(own_catalog)  # touched, same content: no change
    assert load_catalog(own_catalog) is cat
    original = open(own_catalog, encoding="utf-8").read()
    with open(own_catalog, "a", encoding="utf-8") as f:
        f.write(json.dumps({"title": "New Film", "year": 2030}) + "\n")
    for call in (lambda: load_catalog(own_catalog), lambda: check_catalog(own_catalog)):
        with pytest.raises(CatalogChangedError, match=rf"catalog {re.escape(own_catalog)} changed during the run "
                                                      rf"\(content sha256 {sha[:16]} when the run started"):
            call()
    with open(own_catalog, "w", encoding="utf-8") as f:  # restored: the run may go on
        f.write(original)
    assert load_catalog(own_catalog) is cat
    os.remove(own_catalog)
    with pytest.raises(CatalogChangedError, match="is gone: it was removed or renamed after the run started"):
        load_catalog(own_catalog)


def test_catalog_differing_from_the_launchers(own_catalog, tmp_path):
    from rank_grpo_plugin.scoring import CatalogChangedError, load_catalog

    with pytest.raises(CatalogChangedError, match="changed during the run"):
        load_catalog(own_catalog, "0" * 64)  # a worker that first reads it after it changed
    from rank_grpo_plugin.recsys.catalog import CatalogError

    with pytest.raises(CatalogError, match="no such file"):  # never seen, no launch hash: a plain read error
        load_catalog(str(tmp_path / "never.jsonl"))


# ------------------------------------------------------------------ reward + estimator: the first batch stops
PROMPT = "<|im_start|>user\nrecommend like Ronin<|im_end|>\n<|im_start|>assistant\n"


def _experiences(helpers, tokenizer, labels, opts):
    return helpers.rollout_experiences(tokenizer, [PROMPT] * len(labels), ["Heat (1995)\nThe Matrix (1999)"] *
                                       len(labels), labels, opts)


def _args(helpers, catalog, monkeypatch, *extra):
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    return helpers.run_cli(helpers.base_argv + ["--algo.advantage.estimator", "rank_grpo", "--rank_grpo.catalog",
                                                catalog, "--rollout.n_samples_per_prompt", "2", *extra])


def _advantages(args, tokenizer, helpers, experiences):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    maker = RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=0.0), helpers.fake_strategy(args),
                                  tokenizer)
    samples = maker.split_rollout_samples(experiences)  # OpenRLHF: sets index, concatenates micro-batches
    for s in samples:
        s.action_log_probs = torch.zeros_like(s.action_mask, dtype=torch.float32)
        s.kl = torch.zeros_like(s.action_mask, dtype=torch.float32)
    return maker.compute_advantages_and_returns(samples)


@pytest.mark.parametrize("name, label, message", BAD_LABELS[:5], ids=[b[0] for b in BAD_LABELS[:5]])
def test_first_batch_with_a_bad_label_stops_with_the_same_message(helpers, tokenizer, catalog_path, monkeypatch,
                                                                  name, label, message):
    """A dataset the launcher cannot read (hub, parquet): the reward flags the label, the estimator stops the run
    before that batch is trained on, with the validator's message naming the dataset, the field and the sample."""
    args = _args(helpers, catalog_path, monkeypatch, "--data.prompt_dataset", "someone/hub_data",
                 "--data.label_key", "label")
    opts = RankGRPOOptions.from_args(args)
    experiences = _experiences(helpers, tokenizer, [json.dumps(GOOD)] * 2 + [label, json.dumps(GOOD)], opts)
    with pytest.raises(LabelError) as err:
        _advantages(args, tokenizer, helpers, experiences)
    text = str(err.value)
    assert text.startswith("rank_grpo: bad label, the run stops before training on its batch: --data.prompt_dataset "
                           "someone/hub_data: field 'label' of rollout sample 2 (prompt ending ")
    assert message in text
    assert all(e.advantages is None for e in experiences)  # nothing to train on


def test_catalog_change_stops_the_run(helpers, tokenizer, own_catalog, monkeypatch):
    from rank_grpo_plugin.openrlhf.reward import CATALOG_ERROR_KEY, reward_func
    from rank_grpo_plugin.scoring import CatalogChangedError

    args = _args(helpers, own_catalog, monkeypatch)
    opts = RankGRPOOptions.from_json(os.environ[OPTIONS_ENV])
    assert opts.catalog_sha256
    experiences = _experiences(helpers, tokenizer, [json.dumps(GOOD)] * 2, opts)
    _advantages(args, tokenizer, helpers, experiences)  # unchanged: fine
    with open(own_catalog, "a", encoding="utf-8") as f:
        f.write(json.dumps({"title": "New Film", "year": 2030}) + "\n")
    out = reward_func([PROMPT + "Heat (1995)"], [PROMPT], [json.dumps(GOOD)], options=opts)
    assert out["extra_logs"][CATALOG_ERROR_KEY][0].item() == 1.0 and out["rewards"][0].item() == 0.0
    with pytest.raises(CatalogChangedError, match=rf"rank_grpo: --rank_grpo.catalog: catalog {re.escape(own_catalog)} "
                                                  "changed during the run"):
        _advantages(args, tokenizer, helpers, experiences)
