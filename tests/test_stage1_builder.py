"""End-to-end Stage-1 builder on the 100 shipped Reddit-v2 sample rows.

The teacher here is the scripted loopback server (a STAND-IN, see ``rank_grpo_plugin.stage1.scripted``): it
answers each list prompt with the row's existing ``completion`` list, deliberately damaged (a preamble, a missing
year, a wrong year, an invented title, numbering), fails some requests once with 503, and rates reflect
candidates. The real vLLM server is exercised in ``test_stage1_vllm.py``.
"""
from __future__ import annotations

import json

import pytest

from rank_grpo_plugin import Catalog, parse_line
from rank_grpo_plugin.recsys.parse import normalize_title
from rank_grpo_plugin.stage1.cli import main
from rank_grpo_plugin.stage1.scripted import Reply, ScriptedServer, chat_body, replay_teacher

from _paths import DATA  # noqa: E402
SAMPLE = "reddit_v2/sample.jsonl"
CATALOG = "reddit_v2/catalog.jsonl"


def damaged(text: str) -> str:
    lines = text.split("\n")
    out = ["Sure! Here are 20 movies you might enjoy:"]
    for i, line in enumerate(lines, 1):
        p = parse_line(line)
        if i == 3 and p:
            line = p.title  # year missing -> unparsable, counted
        elif i == 5 and p:
            line = f"{p.title} ({p.year + 1})"  # wrong year -> not exactly in catalog, remapped by similarity
        elif i == 7:
            line = "Totally Invented Picture (2031)"
        out.append(f"{i}. {line}")
    return "\n".join(out)


@pytest.fixture(scope="module")
def embed_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("emb"))


def _teacher(rows, flaky=()):
    answers = {r["prompt"][-1]["content"]: damaged(r["completion"][-1]["content"]) for r in rows}
    base = replay_teacher(answers)
    failed_once = set()

    def handler(body, n):
        content = body["messages"][-1]["content"]
        key = content[:200]
        if any(f in content for f in flaky) and key not in failed_once:
            failed_once.add(key)
            return Reply(503, {"error": "overloaded"})
        return base(body, n)

    return handler


def _run(DATA, out, base_url, embed_cache, *extra):
    argv = ["--data", str(DATA / SAMPLE), "--catalog", str(DATA / CATALOG), "--out", str(out),
            "--base-url", base_url, "--model", "scripted-teacher", "--backoff-base", "0.01", "--no-progress",
            "--embed-cache", embed_cache, *extra]
    return main(argv)


@pytest.mark.slow  # loads the default sentence-transformers embedder (all-MiniLM-L6-v2); ~35 s
def test_end_to_end_sample_rows(reddit_rows, reddit_catalog, tmp_path, embed_cache, capsys):
    flaky = ("Best in Show",)
    with ScriptedServer(_teacher(reddit_rows, flaky), max_requests=400) as srv:
        assert _run(DATA, tmp_path / "out", srv.base_url, embed_cache) == 0
        n_first = len(srv.requests)
        stdout = capsys.readouterr().out
        # rerun: everything comes from the cache, outputs identical
        sft1 = (tmp_path / "out" / "sft.jsonl").read_text()
        assert _run(DATA, tmp_path / "out", srv.base_url, embed_cache) == 0
        assert len(srv.requests) == n_first
        assert (tmp_path / "out" / "sft.jsonl").read_text() == sft1
    assert srv.overflow == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # 40 distinct prompts; 1 flaky prompt retried once; reflect requests deduplicated per (conversation, candidates)
    assert report["teacher_client"]["cache_hits"] == report["teacher_client"]["requests"]
    assert report["remap"]["catalog_embedding_cached"] is True  # the rerun reused the .npy catalog embedding
    assert report["teacher"]["answers_failed"] == 0 and report["teacher"]["unparsable_lines"] > 0
    assert report["reflect"]["ratings_parsed"] == report["reflect"]["ratings_requested"]
    m = report["metrics"]
    for step in ("teacher", "remap", "reflect", "adjust", "adjust_heldout", "reference"):
        assert 0.0 <= m[step]["recall"] <= 1.0 and 0.0 <= m[step]["ndcg"] <= 1.0, step
    for step in ("remap", "reflect", "adjust", "adjust_heldout"):
        assert m[step]["in_catalog"] == 1.0 and m[step]["lines_per_list"] == 20
    assert m["adjust"]["recall"] >= m["remap"]["recall"]  # in-sample fit on the same ground truth
    assert "| Remap + Reflect + Adjust" in stdout and "Recall@20" in stdout

    rows = [json.loads(l) for l in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == len(reddit_rows) == 100
    for row, src in zip(rows, reddit_rows):
        assert row["input"] == src["prompt"]
        assert row["output"][0]["role"] == "assistant" and len(row["output"]) == 1
        out = row["output"][0]["content"]
        assert not out.endswith("\n")
        lines = out.split("\n")
        assert len(lines) == 20
        items = [parse_line(l) for l in lines]
        assert all(p is not None and reddit_catalog.contains(p.title, p.year) for p in items)  # 100% in catalog
        assert len({(normalize_title(p.title), p.year) for p in items}) == 20  # no repeats
        seen = {normalize_title(t) for t in src["seen_titles"]}
        assert not any(normalize_title(p.title) in seen for p in items)
    params = json.loads((tmp_path / "out" / "adjust_params.json").read_text())
    assert len(params["w"]) == len(params["b"]) == len(reddit_catalog)
    lists = [json.loads(l) for l in (tmp_path / "out" / "lists.jsonl").read_text().splitlines()]
    assert len(lists[0]["candidates"]) == 100 and set(lists[0]["lists"]) >= {"remap", "reflect", "adjust"}


def test_teacher_down_still_builds_grounded_lists(reddit_rows, reddit_catalog, tmp_path, capsys):
    with ScriptedServer(lambda body, n: Reply(500, "down"), max_requests=200) as srv:
        rc = _run(DATA, tmp_path / "out", srv.base_url, str(tmp_path / "emb"), "--embedder", "hash",
                  "--max-retries", "0", "--no-reflect", "--limit", "10")
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["teacher"]["answers_failed"] == 10 and report["metrics"]["adjust"]["in_catalog"] == 1.0
    assert "HTTP 500" in report["teacher"]["errors"][0]


def test_malformed_teacher_answers_are_never_fatal(reddit_rows, tmp_path, capsys):
    junk = [Reply(200, chat_body("I'd rather not.")), Reply(200, chat_body("")), Reply(200, chat_body(None)),
            Reply(200, chat_body("1. Heat (1995)\n2: +7\n3: banana\n\x00\x01"))]
    with ScriptedServer(lambda body, n: junk[n % len(junk)], max_requests=100) as srv:
        rc = _run(DATA, tmp_path / "out", srv.base_url, str(tmp_path / "emb"), "--embedder", "hash",
                  "--limit", "12", "--n-reflect", "5")
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["teacher"]["answers_malformed"] == report["rows"] == 12
    assert report["reflect"]["malformed_lines"] > 0
    assert report["metrics"]["adjust"]["in_catalog"] == 1.0


def test_bad_input_names_row_and_field_and_writes_nothing(reddit_rows, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    rows = [dict(r) for r in reddit_rows[:3]]
    rows[2] = {k: v for k, v in rows[2].items() if k != "groundtruth_with_release_year"}
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rc = main(["--data", str(bad), "--catalog", str(DATA / CATALOG), "--out", str(tmp_path / "out"),
               "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--embedder", "hash", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}: line 3: field 'groundtruth_with_release_year'" in err
    assert not (tmp_path / "out").exists()
    rc = main(["--data", str(DATA / SAMPLE), "--catalog", str(DATA / CATALOG), "--out", str(tmp_path / "o2"),
               "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--n-candidates", "10"])
    assert rc == 2 and "--n-candidates: must be >= --k (20)" in capsys.readouterr().err
