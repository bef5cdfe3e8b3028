"""A scripted OpenAI-compatible chat-completions server on loopback: a stand-in teacher for tests and demos.

It is NOT a model: a Python ``handler(body, n) -> Reply`` decides every answer (status code, body, headers,
delay), so tests can check retries, caching and malformed answers exactly. It binds 127.0.0.1 on a free port,
serves at most ``max_requests`` requests (later ones get HTTP 500 and are flagged in ``overflow``), and records
every request body and the peak number of requests in flight.

:func:`replay_teacher` builds a handler that answers the list prompt of each known row with a given text
(e.g. the row's existing ``completion``) and rates reflect candidates +1 when they are in that text, 0 otherwise.
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from ..recsys.parse import normalize_title, parse_line

__all__ = ["Reply", "ScriptedServer", "chat_body", "replay_teacher"]


@dataclass
class Reply:
    status: int = 200
    body: Union[bytes, str, Dict[str, Any]] = b""
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (timeouts)


def chat_body(text: Optional[str], prompt_tokens: int = 10, completion_tokens: int = 20) -> Dict[str, Any]:
    """A chat-completions response body carrying ``text``."""
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class ScriptedServer:
    def __init__(self, handler: Callable[[Dict[str, Any], int], Reply], max_requests: int = 1000):
        self.handler = handler
        self.max_requests = max_requests
        self.requests: List[Dict[str, Any]] = []
        self.overflow = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                with outer._lock:
                    n = len(outer.requests)
                    outer.requests.append(body)
                    outer.in_flight += 1
                    outer.peak_in_flight = max(outer.peak_in_flight, outer.in_flight)
                    over = n >= outer.max_requests
                    if over:
                        outer.overflow += 1
                try:
                    if over:
                        reply = Reply(500, {"error": "scripted server: request budget exhausted"})
                    elif not self.path.endswith("/chat/completions"):
                        reply = Reply(404, {"error": f"no route {self.path}"})
                    else:
                        reply = outer.handler(body, n)
                    if reply.delay:
                        time.sleep(reply.delay)
                    data = reply.body
                    if isinstance(data, dict):
                        data = json.dumps(data).encode()
                    elif isinstance(data, str):
                        data = data.encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


_CANDIDATE = re.compile(r"^\d+\. (.*)$")


def replay_teacher(answers: Mapping[str, str]) -> Callable[[Dict[str, Any], int], Reply]:
    """Handler answering a list request whose last message content is a key of ``answers`` with its value, and a
    reflect request (the builder's rating prompt) with ``i: +1`` for candidates whose normalised title appears in
    the answer given for that conversation, ``i: 0`` otherwise. Unknown prompts get a short prose reply."""
    by_conv: Dict[str, set] = {}
    for prompt, text in answers.items():
        titles = {normalize_title(p.title) for p in map(parse_line, text.split("\n")) if p is not None}
        by_conv[_conversation(prompt)] = titles

    def handler(body: Dict[str, Any], n: int) -> Reply:
        content = body.get("messages", [{}])[-1].get("content", "")
        if content in answers:
            return Reply(200, chat_body(answers[content]))
        if content.startswith("You are judging movie recommendations"):
            conv = content.split("\nConversation:\n", 1)[-1].split("\n\nCandidates (", 1)[0]
            liked = by_conv.get(conv.strip(), set())
            out = []
            listing = content.split("\n\nCandidates (", 1)[-1].split("\n\n", 1)[0].split("\n")[1:]
            for i, line in enumerate(listing, 1):
                m = _CANDIDATE.match(line)
                p = parse_line(m.group(1)) if m else None
                out.append(f"{i}: {'+1' if p is not None and normalize_title(p.title) in liked else '0'}")
            return Reply(200, chat_body("\n".join(out)))
        return Reply(200, chat_body("I am not sure what you mean."))

    return handler


def _conversation(prompt: str) -> str:
    from .data import conversation_text

    return conversation_text([{"role": "user", "content": prompt}])
