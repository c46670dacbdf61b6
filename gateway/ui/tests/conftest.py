"""The dashboard's browser test bed: a real obb-gateway (serving the page at /ui) and a real
obb-node serving the built-in `echo` model, with an admin key, two user keys and a node key;
and Debian's Chromium driven by Playwright. Binaries come from OBB_BIN_DIR, else the
workspace's target/debug, which `cargo test --workspace` builds. Playwright's own browser
download is never used: the test launches /usr/bin/chromium."""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import time

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(os.environ.get("OBB_BIN_DIR", ROOT / "target" / "debug"))
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "target" / "ui-screenshots"
# The README's pictures, taken at 1280×800 when OBB_UI_README_SHOTS names a directory.
README_SHOTS = {"overview", "jobs", "job", "batches", "nodes", "keys"}
TEST_ONLY_ENV = {"OBB_BIN_DIR", "OBB_UI_README_SHOTS"}
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}

expect.set_options(timeout=15_000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def binary(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is missing: build it with `cargo build --workspace`"
    return str(path)


def eventually(check, what: str, seconds: float = 20):
    """Returns check()'s first truthy answer, polling until the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Stack:
    """A gateway on a free loopback port and one node serving `echo`. Keys: `admin`, `user`,
    `other_user` (a second USER, whose jobs the first must not see) and `node_key`."""

    def __init__(self, tmp: pathlib.Path) -> None:
        db = tmp / "queue.db"
        # The gateway refuses OBB_* variables it does not know: the test's own stay here.
        env = {k: v for k, v in os.environ.items() if k not in TEST_ONLY_ENV} | {"OBB_LOG": "warn"}

        def run(*args: str) -> str:
            out = subprocess.run(
                [binary("obb-gateway"), *args, "--db", str(db)], env=env, check=True,
                capture_output=True, text=True,
            ).stdout
            # The secret is the last line the command prints.
            return out.strip().splitlines()[-1].strip()

        self.admin = run("setup", "--yes")
        self.user = run("keys", "create", "--role", "user", "--name", "ui-user")
        self.other_user = run("keys", "create", "--role", "user", "--name", "ui-other-user")
        self.node_key = run("keys", "create", "--role", "node", "--name", "ui-node")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.gateway = subprocess.Popen(
            [binary("obb-gateway"), "start", "--host", "127.0.0.1", "--port", str(port), "--db", str(db)],
            env={**env, "OBB_REAPER_INTERVAL_MS": "50", "OBB_GRACE_PERIOD_SECONDS": "0"},
        )
        eventually(self._healthy, "the gateway to start")
        config = tmp / "node_config.toml"
        config.write_text(
            f'[server]\nurl = "{self.base_url}"\napi_key = "{self.node_key}"\n\n'
            '[node]\nname = "ui-node"\nmodels = ["echo"]\nfetch_wait_seconds = 5\n'
        )
        self.node = subprocess.Popen(
            [binary("obb-node"), "run", "--config", str(config)],
            env={**env, "XDG_DATA_HOME": str(tmp)},
        )

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def call(self, method: str, path: str, key: str, **kwargs) -> httpx.Response:
        """One HTTP request with `key`, as curl would make it."""
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.base_url}{path}", headers=headers, timeout=30, **kwargs)

    def submit(self, key: str, model: str = "nobody-serves-this", headers: dict | None = None) -> str:
        """Submits a chat completion without waiting (202) and returns its job id."""
        answer = self.call(
            "POST", "/v1/chat/completions", key,
            json={"model": model, "messages": [{"role": "user", "content": "hello from the dashboard test"}]},
            headers={"Prefer": "respond-async", **(headers or {})},
        )
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    def stop(self) -> None:
        for process in (self.node, self.gateway):
            process.send_signal(signal.SIGINT)
        for process in (self.node, self.gateway):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


class Dashboard:
    """One browser tab on the dashboard. Console errors and uncaught exceptions are collected;
    the fixture fails the test on any that was not announced with `allow`."""

    def __init__(self, page: Page, stack: Stack) -> None:
        self.page = page
        self.stack = stack
        self.errors: list[str] = []
        self.allowed: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def allow(self, fragment: str) -> None:
        """Chromium logs every 4xx answer to fetch() as a console error: a test that provokes
        one on purpose says which."""
        self.allowed.append(fragment)

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(fragment in e for fragment in self.allowed)]

    def open(self, view: str = "overview") -> None:
        self.page.goto(f"{self.stack.base_url}/ui#/{view}")

    def login(self, key: str) -> None:
        self.open()
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.locator("#whoami")).to_be_visible()
        # The live stream is open: events from now on reach the page.
        expect(self.page.locator("#live")).to_have_text("live")

    def go(self, view: str) -> None:
        """Navigates by hash, as a link would: the page is not reloaded."""
        self.page.evaluate("view => { location.hash = '#/' + view; }", view)

    def shot(self, name: str) -> None:
        """Saves target/ui-screenshots/<name>.png, and the README's copy of it when asked.
        Notices ("job … queued again") are dismissed first: they belong to the moment."""
        for dismiss in self.page.get_by_role("button", name="Dismiss message").all():
            dismiss.click()
        expect(self.page.locator("#notice .notice")).to_have_count(0)
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"))
        readme = os.environ.get("OBB_UI_README_SHOTS")
        if readme and name in README_SHOTS and self.page.viewport_size == DESKTOP:
            pathlib.Path(readme).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(pathlib.Path(readme) / f"{name}.png"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("ui-stack"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def browser():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run ./test.sh, which installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


def open_dashboard(browser, stack: Stack, viewport: dict):
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    dashboard = Dashboard(context.new_page(), stack)
    yield dashboard
    # Closed before the stack stops, so the page's live stream never sees the gateway go.
    context.close()
    assert not dashboard.unexpected_errors(), f"console errors: {dashboard.unexpected_errors()}"


@pytest.fixture
def dashboard(browser, stack):
    """A fresh tab (its own sessionStorage) at 1280×800."""
    yield from open_dashboard(browser, stack, DESKTOP)


@pytest.fixture
def phone(browser, stack):
    """A fresh tab at a phone's 375×667."""
    yield from open_dashboard(browser, stack, PHONE)
