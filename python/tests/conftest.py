"""Starts a real obb-gateway and a real obb-node (serving the built-in `echo` model) for the
client tests. The binaries come from OBB_BIN_DIR, else the workspace's target/debug, which
`cargo test --workspace` builds."""
from __future__ import annotations

import http.server
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
    def __init__(self, tmp: pathlib.Path) -> None:
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
        config.write_text(
            f'[server]\nurl = "{self.base_url}"\napi_key = "{self.node_key}"\n\n'
            f'[node]\nname = "py-node"\nmodels = ["echo"]\nfetch_wait_seconds = 5\n'
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


@pytest.fixture
def scripted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    Scripted.script, Scripted.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Scripted
    server.shutdown()
