"""Teacher client for any OpenAI-compatible ``/chat/completions`` endpoint. Standard library only.

* bounded concurrency (a thread pool of ``concurrency`` workers);
* retries with exponential backoff and jitter on 429, 5xx, timeouts and connection errors (``Retry-After`` is
  honoured, capped at ``backoff_max``); other 4xx fail the request; 401/403/404 abort the run
  (:class:`TeacherConfigError`: every request would fail the same way);
* an on-disk cache (SQLite) keyed by the SHA-256 of the canonical request body (model, messages, sampling
  parameters; never the API key or the URL), so a rerun resumes and never pays twice; only successful answers
  are cached, so failed requests are retried by the next run;
* token and cost counters (``usage`` of paid answers; prices per million tokens), a progress bar (tqdm when
  installed, else a periodic line on stderr).

An answer whose body is not the expected JSON is counted as malformed and retried like a server error; its
text content itself is never trusted here (the callers parse it).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["TeacherClient", "TeacherAnswer", "TeacherStats", "TeacherError", "TeacherConfigError", "RequestCache"]

_RETRY_STATUS = {408, 409, 425, 429}
_FATAL_STATUS = {401, 403, 404}


class TeacherError(RuntimeError):
    """A teacher request could not be completed."""


class TeacherConfigError(TeacherError):
    """The endpoint refuses every request (bad URL, model or key); the run stops."""


@dataclass
class TeacherAnswer:
    text: Optional[str]  # None when the request failed
    cached: bool = False
    error: Optional[str] = None


@dataclass
class TeacherStats:
    requests: int = 0  # distinct requests asked for
    cache_hits: int = 0
    http_calls: int = 0  # attempts sent over the network
    retries: int = 0
    failed: int = 0
    malformed_bodies: int = 0
    prompt_tokens: int = 0  # paid (not cached) answers only
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    errors: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = round(self.cost_usd, 6)
        d["seconds"] = round(self.seconds, 2)
        return d


class RequestCache:
    """SQLite key -> answer JSON. Thread-safe; every insert is committed (a killed run loses nothing)."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
            self._db.commit()
        except sqlite3.DatabaseError as e:
            raise TeacherError(f"teacher cache {path} is not a usable SQLite file: {e}") from None

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) and isinstance(value.get("text"), str) else None

    def put(self, key: str, value: Dict[str, Any]) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers (key, answer) VALUES (?, ?)", (key, blob))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Progress:
    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.enabled, self.n = total, desc, enabled, 0
        self._bar = None
        self._last = 0.0
        self._lock = threading.Lock()
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
            except ImportError:
                pass

    def update(self) -> None:
        with self._lock:
            self.n += 1
            if self._bar is not None:
                self._bar.update(1)
            elif self.enabled and (time.monotonic() - self._last > 5 or self.n == self.total):
                self._last = time.monotonic()
                print(f"{self.desc}: {self.n}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class TeacherClient:
    """Chat-completions client with concurrency limit, retries, cache and counters.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model: model name sent in every request.
        api_key: bearer token (``EMPTY`` for local servers).
        cache_path: SQLite file for the answer cache; None disables caching.
        concurrency: max requests in flight.
        max_retries: retries after the first attempt for retryable failures.
        timeout: seconds per HTTP attempt.
        backoff_base, backoff_max: delay before retry r is ``min(backoff_max, backoff_base * 2**r)`` times a
            jitter in [0.5, 1], or the server's ``Retry-After`` (capped at ``backoff_max``).
        price_input, price_output: USD per million prompt / completion tokens, for the cost counter.
        params: sampling parameters merged into every request body (temperature, max_tokens, seed, ...).
    """

    def __init__(self, base_url: str, model: str, api_key: Optional[str] = None, cache_path: Optional[str] = None,
                 concurrency: int = 4, max_retries: int = 6, timeout: float = 120.0, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, price_input: float = 0.0, price_output: float = 0.0,
                 params: Optional[Dict[str, Any]] = None, progress: bool = True):
        if not base_url:
            raise TeacherConfigError("no teacher endpoint: pass --base-url or set OPENAI_BASE_URL")
        if not model:
            raise TeacherConfigError("no teacher model: pass --model or set RANK_GRPO_TEACHER_MODEL")
        if concurrency < 1:
            raise TeacherConfigError(f"--concurrency must be >= 1, got {concurrency}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key or "EMPTY"
        self.cache = RequestCache(cache_path) if cache_path else None
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.price_input = float(price_input)
        self.price_output = float(price_output)
        self.params = dict(params or {})
        self.progress = progress
        self.stats = TeacherStats()
        self._lock = threading.Lock()
        self._fatal: Optional[str] = None

    # ------------------------------------------------------------------ requests
    def body(self, messages: Sequence[Dict[str, str]], params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return {"model": self.model, "messages": [dict(m) for m in messages], **self.params, **(params or {})}

    @staticmethod
    def key(body: Dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def _count_error(self, name: str) -> None:
        with self._lock:
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1

    def _attempt(self, payload: bytes):
        """One HTTP call. Returns (status, body_bytes, headers); raises OSError subclasses on transport errors."""
        req = urllib.request.Request(self.url, data=payload, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            try:
                data = e.read()
            except Exception:
                data = b""
            return e.code, data, e.headers

    def _delay(self, retry: int, headers) -> float:
        ra = headers.get("Retry-After") if headers is not None else None
        if ra is not None:
            try:
                return max(0.0, min(self.backoff_max, float(ra)))
            except ValueError:
                pass
        return min(self.backoff_max, self.backoff_base * (2 ** retry)) * (0.5 + 0.5 * random.random())

    def _request(self, body: Dict[str, Any]) -> TeacherAnswer:
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if self._fatal:
                return TeacherAnswer(None, error=self._fatal)
            if attempt:
                with self._lock:
                    self.stats.retries += 1
            with self._lock:
                self.stats.http_calls += 1
            headers = None
            try:
                status, data, headers = self._attempt(payload)
            except (socket.timeout, TimeoutError) as e:
                last = f"timeout after {self.timeout:g}s ({e})"
                self._count_error("timeout")
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    last = f"timeout after {self.timeout:g}s"
                    self._count_error("timeout")
                else:
                    last = f"connection error: {reason}"
                    self._count_error("connection")
            except (ConnectionError, OSError) as e:  # reset mid-response, refused, ...
                last = f"connection error: {e}"
                self._count_error("connection")
            else:
                if status == 200:
                    answer = _extract(data)
                    if answer is not None:
                        return self._accept(body, answer)
                    with self._lock:
                        self.stats.malformed_bodies += 1
                    last = "HTTP 200 with a body that is not a chat completion"
                    self._count_error("malformed_body")
                else:
                    detail = data[:300].decode("utf-8", "replace").strip()
                    last = f"HTTP {status}: {detail}"
                    self._count_error(f"http_{status}")
                    if status in _FATAL_STATUS:
                        self._fatal = f"teacher endpoint {self.url} refused the request ({last}); check --base-url, --model and the API key"
                        return TeacherAnswer(None, error=self._fatal)
                    if not (status in _RETRY_STATUS or status >= 500):
                        break  # other 4xx: this request is bad; retrying will not help
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, headers))
        with self._lock:
            self.stats.failed += 1
        return TeacherAnswer(None, error=last)

    def _accept(self, body: Dict[str, Any], answer: Dict[str, Any]) -> TeacherAnswer:
        usage = answer.get("usage") or {}
        pt, ct = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        with self._lock:
            self.stats.prompt_tokens += pt
            self.stats.completion_tokens += ct
            self.stats.cost_usd += pt * self.price_input / 1e6 + ct * self.price_output / 1e6
        if self.cache is not None:
            self.cache.put(self.key(body), answer)
        return TeacherAnswer(answer["text"], cached=False)

    # ------------------------------------------------------------------ batch API
    def complete_many(self, conversations: Sequence[Sequence[Dict[str, str]]], desc: str = "teacher",
                      params: Optional[Dict[str, Any]] = None) -> List[TeacherAnswer]:
        """Answers for each message list, in order (``params`` override the client's sampling parameters).
        Identical requests are sent once. Never raises on an individual failure (its answer has ``text=None``);
        raises :class:`TeacherConfigError` when the endpoint refuses requests outright (401/403/404)."""
        t0 = time.monotonic()
        bodies = [self.body(m, params) for m in conversations]
        keys = [self.key(b) for b in bodies]
        unique: Dict[str, Dict[str, Any]] = {}
        for k, b in zip(keys, bodies):
            unique.setdefault(k, b)
        results: Dict[str, TeacherAnswer] = {}
        todo = []
        for k, b in unique.items():
            hit = self.cache.get(k) if self.cache is not None else None
            if hit is not None:
                results[k] = TeacherAnswer(hit["text"], cached=True)
            else:
                todo.append((k, b))
        with self._lock:
            self.stats.requests += len(unique)
            self.stats.cache_hits += len(unique) - len(todo)
        bar = _Progress(len(todo), desc, self.progress and bool(todo))

        def run(item):
            k, b = item
            ans = self._request(b)
            bar.update()
            return k, ans

        try:
            if todo:
                with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
                    for k, ans in pool.map(run, todo):
                        results[k] = ans
        finally:
            bar.close()
            with self._lock:
                self.stats.seconds += time.monotonic() - t0
        if self._fatal:
            raise TeacherConfigError(self._fatal)
        return [results[k] for k in keys]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _extract(data: bytes) -> Optional[Dict[str, Any]]:
    """``{"text", "usage", "finish_reason"}`` from a chat-completions body; None when it is not one."""
    try:
        obj = json.loads(data)
        choice = obj["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if content is None:
        content = ""
    if not isinstance(content, str):
        return None
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    return {"text": content, "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")},
            "finish_reason": choice.get("finish_reason") if isinstance(choice, dict) else None}
