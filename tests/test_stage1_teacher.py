"""Teacher client against a scripted HTTP server on loopback.

The server (``rank_grpo_plugin.stage1.scripted.ScriptedServer``) is a STAND-IN for an OpenAI-compatible
endpoint: a Python function scripts each reply (status, body, headers, delay), so retries, backoff, caching,
concurrency and malformed answers are checked exactly and fast. The real vLLM server is exercised in
``test_stage1_vllm.py`` (slow).
"""
from __future__ import annotations

import threading
import time

import pytest

from rank_grpo_plugin.stage1.builder import parse_teacher_list
from rank_grpo_plugin.stage1.scripted import Reply, ScriptedServer, chat_body
from rank_grpo_plugin.stage1.teacher import TeacherClient, TeacherConfigError

MSG = [{"role": "user", "content": "recommend"}]


def client(server, tmp_path=None, **kw):
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("progress", False)
    cache = str(tmp_path / "cache.sqlite") if tmp_path is not None else None
    return TeacherClient(server.base_url, "teacher-x", "sk-test", cache_path=cache, **kw)


def test_retries_on_429_and_5xx_then_succeeds(tmp_path):
    script = [Reply(429, {"error": "slow down"}, {"Retry-After": "0"}), Reply(503, "busy"), Reply(500, ""),
              Reply(200, chat_body("Heat (1995)", 7, 3))]
    with ScriptedServer(lambda body, n: script[n], max_requests=4) as srv:
        c = client(srv, tmp_path, max_retries=5, price_input=1.0, price_output=2.0)
        [ans] = c.complete_many([MSG])
    assert ans.text == "Heat (1995)" and not ans.cached and ans.error is None
    assert len(srv.requests) == 4 and srv.overflow == 0
    s = c.stats
    assert (s.http_calls, s.retries, s.failed) == (4, 3, 0)
    assert s.errors == {"http_429": 1, "http_503": 1, "http_500": 1}
    assert (s.prompt_tokens, s.completion_tokens) == (7, 3)
    assert s.cost_usd == pytest.approx(7e-6 + 6e-6)
    body = srv.requests[0]
    assert body["model"] == "teacher-x" and body["messages"] == MSG


def test_timeout_is_retried(tmp_path):
    script = [Reply(200, chat_body("late"), delay=1.0), Reply(200, chat_body("Ronin (1998)"))]
    with ScriptedServer(lambda body, n: script[n], max_requests=2) as srv:
        c = client(srv, tmp_path, timeout=0.3, max_retries=2)
        [ans] = c.complete_many([MSG])
    assert ans.text == "Ronin (1998)"
    assert c.stats.errors == {"timeout": 1} and c.stats.retries == 1


def test_cache_resumes_and_never_pays_twice(tmp_path):
    with ScriptedServer(lambda body, n: Reply(200, chat_body(body["messages"][0]["content"].upper(), 5, 5)),
                        max_requests=3) as srv:
        convs = [[{"role": "user", "content": w}] for w in ("a", "b", "a", "c")]
        c1 = client(srv, tmp_path)
        out1 = c1.complete_many(convs)
        c1.close()
        assert [a.text for a in out1] == ["A", "B", "A", "C"]
        assert len(srv.requests) == 3  # duplicate "a" sent once
        assert (c1.stats.requests, c1.stats.cache_hits, c1.stats.prompt_tokens) == (3, 0, 15)
        c2 = client(srv, tmp_path)  # a rerun: same cache file, no new HTTP calls, nothing paid
        out2 = c2.complete_many(convs)
        assert [a.text for a in out2] == ["A", "B", "A", "C"] and all(a.cached for a in out2)
        assert len(srv.requests) == 3
        assert (c2.stats.cache_hits, c2.stats.http_calls, c2.stats.prompt_tokens) == (3, 0, 0)
        # a different sampling parameter is a different request
        c3 = TeacherClient(srv.base_url, "teacher-x", cache_path=str(tmp_path / "cache.sqlite"),
                           params={"temperature": 0.7}, progress=False)
        assert c3.key(c3.body(convs[0])) != c2.key(c2.body(convs[0]))
    assert srv.overflow == 0


def test_failures_are_not_cached_and_not_fatal(tmp_path):
    with ScriptedServer(lambda body, n: Reply(502, "bad gateway"), max_requests=3) as srv:
        c = client(srv, tmp_path, max_retries=2)
        [ans] = c.complete_many([MSG])
        assert ans.text is None and "HTTP 502" in ans.error
        assert (c.stats.failed, c.stats.http_calls) == (1, 3)
        assert len(c.cache) == 0
    # a plain 400 is not retried
    with ScriptedServer(lambda body, n: Reply(400, {"error": "context too long"}), max_requests=1) as srv:
        c = client(srv, tmp_path, max_retries=5)
        [ans] = c.complete_many([MSG])
        assert ans.text is None and len(srv.requests) == 1


def test_malformed_bodies_are_counted_and_retried(tmp_path):
    script = [Reply(200, "not json"), Reply(200, {"choices": []}), Reply(200, {"choices": [{"message": {}}]}),
              Reply(200, chat_body("Alien (1979)"))]
    with ScriptedServer(lambda body, n: script[n], max_requests=4) as srv:
        c = client(srv, tmp_path, max_retries=3)
        [ans] = c.complete_many([MSG])
    assert ans.text == "Alien (1979)"
    assert c.stats.malformed_bodies == 3 and c.stats.errors == {"malformed_body": 3}


def test_auth_error_aborts_with_clear_message(tmp_path):
    with ScriptedServer(lambda body, n: Reply(401, {"error": "invalid api key"}), max_requests=5) as srv:
        c = client(srv, tmp_path, concurrency=1)
        with pytest.raises(TeacherConfigError, match="HTTP 401.*check --base-url"):
            c.complete_many([[{"role": "user", "content": str(i)}] for i in range(5)])
        assert len(srv.requests) == 1  # queued requests are not sent after a fatal answer


def test_connection_refused_is_retried_then_fails(tmp_path):
    with ScriptedServer(lambda body, n: Reply(200, chat_body("x")), max_requests=1) as srv:
        url = srv.base_url
    c = TeacherClient(url, "m", max_retries=1, backoff_base=0.01, timeout=1, progress=False)
    [ans] = c.complete_many([MSG])
    assert ans.text is None and c.stats.errors == {"connection": 2}


def test_concurrency_limit(tmp_path):
    with ScriptedServer(lambda body, n: Reply(200, chat_body("ok"), delay=0.15), max_requests=12) as srv:
        c = client(srv, tmp_path, concurrency=3)
        t0 = time.monotonic()
        out = c.complete_many([[{"role": "user", "content": str(i)}] for i in range(12)])
        took = time.monotonic() - t0
    assert all(a.text == "ok" for a in out)
    assert srv.peak_in_flight == 3
    assert took >= 4 * 0.15 * 0.9  # 12 requests, 3 at a time


def test_config_errors():
    with pytest.raises(TeacherConfigError, match="--base-url"):
        TeacherClient("", "m")
    with pytest.raises(TeacherConfigError, match="--model"):
        TeacherClient("http://127.0.0.1:9/v1", "")


def test_parse_teacher_list_untrusted_answers():
    text = ("Sure! Here are my picks:\n1. **Heat (1995)**\n2. Ronin\n- \"Collateral\" (2004)\n\n"
            "3. Heat (1995)\nThief (1981) - a classic\n4) Drive (2011)")
    t = parse_teacher_list(text, max_items=20)
    assert t.items == [("Heat", 1995), ("Collateral", 2004), ("Drive", 2011)]
    assert t.unparsable_lines == 3 and t.duplicates == 1 and not t.failed
    assert parse_teacher_list(text, max_items=2).items == [("Heat", 1995), ("Collateral", 2004)]
    assert parse_teacher_list(None).failed and parse_teacher_list("").items == []
