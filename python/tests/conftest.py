"""Starts a real obb-gateway and a real obb-node (serving the built-in `echo` model) for the
client tests, and a second gateway whose node sends its jobs to a mock OpenAI upstream
(`MockUpstream`), for the endpoints `echo` does not serve (embeddings, responses). The
binaries come from OBB_BIN_DIR, else the workspace's target/debug, which
`cargo test --workspace` builds."""
from __future__ import annotations

import http.server
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("OBB_BIN_DIR", ROOT / "target" / "debug"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def binary(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is missing: build it with `cargo build --workspace`"
    return str(path)


class Stack:
    """A gateway and one node. The node serves `models` from `upstream` (an OpenAI-compatible
    base URL ending in `/v1`), or the built-in `echo` model when there is none."""

    def __init__(self, tmp: pathlib.Path, models: str = '["echo"]', upstream: str = "") -> None:
        db = tmp / "queue.db"
        env = {**os.environ, "OBB_LOG": "warn"}
        run = lambda *args: subprocess.run(  # noqa: E731
            [binary("obb-gateway"), *args, "--db", str(db)], env=env, check=True,
            capture_output=True, text=True,
        ).stdout.strip()
        self.admin = run("setup", "--yes")
        self.user = run("keys", "create", "--role", "user", "--name", "py-user")
        self.node_key = run("keys", "create", "--role", "node", "--name", "py-node")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.gateway = subprocess.Popen(
            [binary("obb-gateway"), "start", "--host", "127.0.0.1", "--port", str(port), "--db", str(db)],
            env={**env, "OBB_REAPER_INTERVAL_MS": "50", "OBB_GRACE_PERIOD_SECONDS": "0"},
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.base_url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        config = tmp / "node_config.toml"
        llm = f'[llm]\nbase_url = "{upstream}"\napi_key = "mock-key"\n\n' if upstream else ""
        config.write_text(
            f'[server]\nurl = "{self.base_url}"\napi_key = "{self.node_key}"\n\n{llm}'
            f'[node]\nname = "py-node"\nmodels = {models}\nfetch_wait_seconds = 5\n'
        )
        self.node = subprocess.Popen(
            [binary("obb-node"), "run", "--config", str(config)],
            env={**env, "XDG_DATA_HOME": str(tmp)},
        )

    def stop(self) -> None:
        for process in (self.node, self.gateway):
            process.send_signal(signal.SIGINT)
        for process in (self.node, self.gateway):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def act_as_node(self, model: str):
        """Leases the next job of `model` as a node would, and returns (job, submit)."""
        headers = {"Authorization": f"Bearer {self.node_key}"}
        fetched = httpx.post(
            f"{self.base_url}/internal/queue/fetch",
            json={"node_id": "py-test-node", "models": [model], "limit": 1, "wait": 10},
            headers=headers, timeout=30,
        ).json()["jobs"][0]

        def submit(result: dict) -> None:
            httpx.post(
                f"{self.base_url}/internal/queue/submit",
                json=[{"id": fetched["id"], "lease_id": fetched["lease_id"], **result}],
                headers=headers,
            ).raise_for_status()

        return fetched, submit


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack"))
    yield stack
    stack.stop()


class Scripted(http.server.BaseHTTPRequestHandler):
    """A stub server answering from a script of (status, headers) pairs, for the retry
    and rate-limit paths a real gateway does not produce on demand. It records each request
    as (method, path, headers, arrival time)."""

    script: list = []
    seen: list = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        Scripted.seen.append((self.command, self.path, dict(self.headers), time.time()))
        status, headers = Scripted.script.pop(0) if Scripted.script else (200, {})
        body = (
            b'{"id":"job-x","object":"chat.completion.job","status":"queued","model":"m"}'
            if status < 400
            else b'{"error":{"message":"scripted","type":"x","param":null,"code":null}}'
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_):
        pass


class MockUpstream(http.server.BaseHTTPRequestHandler):
    """The LLM server behind the upstream stack's node, OpenAI-shaped and not an LLM:
    `GET /v1/models` lists `m`; `POST /v1/embeddings` gives each input a vector made from it
    alone (`mock_embedding`); `POST /v1/responses` answers a completed response whose text
    is `mock: <input>`. Every POST is recorded in `calls` as (path, body)."""

    calls: list = []

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "mock"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"null")
        MockUpstream.calls.append((self.path, body))
        if self.path == "/v1/embeddings":
            items = body["input"] if isinstance(body["input"], list) and not isinstance(body["input"][0], int) else [body["input"]]
            tokens = sum(mock_tokens(item) for item in items)
            self._send(200, {
                "object": "list", "model": body["model"],
                "data": [{"object": "embedding", "index": i, "embedding": mock_embedding(item)} for i, item in enumerate(items)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })
        elif self.path == "/v1/responses":
            text = mock_text(body["input"])
            self._send(200, {
                "id": f"resp_upstream{len(MockUpstream.calls)}", "object": "response",
                "created_at": int(time.time()), "status": "completed", "model": body["model"],
                "output": [{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "text": f"mock: {text}", "annotations": []}]}],
                "usage": {"input_tokens": len(text.split()), "output_tokens": len(text.split()) + 1,
                          "total_tokens": 2 * len(text.split()) + 1},
            })
        else:
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error", "param": None, "code": None}})

    def _send(self, status: int, answer: dict) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_):
        pass


def mock_embedding(item) -> list:
    """The mock's vector for one input (a text or a token-id list): its length, the sum of
    its bytes (or ids) and its first byte (or id), as floats."""
    numbers = list(item.encode()) if isinstance(item, str) else list(item)
    return [float(len(numbers)), float(sum(numbers)), float(numbers[0] if numbers else 0)]


def mock_tokens(item) -> int:
    """The mock's token count of one input: the words of a text, the ids of a list."""
    return max(1, len(item.split())) if isinstance(item, str) else len(item)


def mock_text(input) -> str:
    """The text of a Responses `input`: itself, or its items' texts joined by spaces."""
    if isinstance(input, str):
        return input
    texts = []
    for item in input:
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(part.get("text", "") for part in content or [])
    return " ".join(texts)


@pytest.fixture(scope="session")
def upstream_stack(tmp_path_factory):
    """A gateway whose node sends model `m`'s jobs, of every endpoint, to `MockUpstream`;
    `.mock` is the handler class, whose `calls` the tests read."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MockUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stack = Stack(
        tmp_path_factory.mktemp("upstream-stack"), models='["m"]',
        upstream=f"http://127.0.0.1:{server.server_address[1]}/v1",
    )
    stack.mock = MockUpstream
    yield stack
    stack.stop()
    server.shutdown()


@pytest.fixture
def scripted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    Scripted.script, Scripted.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Scripted
    server.shutdown()
