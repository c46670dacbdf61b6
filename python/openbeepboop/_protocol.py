"""What both clients share: objects with attribute access, request building, answer
parsing, and the retry and wait rules. No I/O happens here."""
from __future__ import annotations

import email.utils
import os
import random
import re
import time
import uuid
from datetime import timezone
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import _errors

FINAL = ("completed", "failed", "cancelled", "expired")
MAX_POLL_IDS = 1000
LONG_POLL = 60.0


class Obj(dict):
    """A JSON object whose fields also read as attributes: `result.choices[0].message`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return wrap(self[name])
        except KeyError as missing:
            raise AttributeError(name) from missing

    def __getitem__(self, key: Any) -> Any:
        return wrap(dict.__getitem__(self, key))


def wrap(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, Obj):
        return Obj(value)
    if isinstance(value, list):
        return [wrap(item) for item in value]
    return value


class Job(Obj):
    """A job object of the gateway, or a `not_found` entry of a poll."""

    @property
    def is_completed(self) -> bool:
        return self.get("status") == "completed"

    @property
    def is_finished(self) -> bool:
        return self.get("status") in FINAL

    @property
    def result(self) -> Optional[Obj]:
        return wrap(self.get("result"))

    @property
    def error(self) -> Optional[Obj]:
        return wrap(self.get("error"))


def settings(base_url: Optional[str], api_key: Optional[str]) -> Tuple[str, str]:
    """The base URL and key, from the arguments or OBB_BASE_URL and OBB_API_KEY."""
    base = base_url or os.environ.get("OBB_BASE_URL") or "http://localhost:8000"
    key = api_key or os.environ.get("OBB_API_KEY")
    if not key:
        raise _errors.OpenBeepBoopError(
            "no API key: pass api_key=... or set OBB_API_KEY"
        )
    base = base.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base, key


def submit_request(
    model: str,
    messages: List[Dict[str, Any]],
    idempotency_key: Optional[str],
    priority: Optional[int],
    ttl: Optional[float],
    fields: Dict[str, Any],
) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The body and headers of a submit. Every submit carries an Idempotency-Key, so that
    a retry after a lost answer never creates a second job. `stream` and `stream_options`
    are dropped: this client submits jobs and reads their results, and the gateway answers a
    `stream: true` request with an event stream rather than a job."""
    fields = {k: v for k, v in fields.items() if k not in ("stream", "stream_options")}
    body = {"model": model, "messages": messages, **fields}
    headers = {"Idempotency-Key": idempotency_key or f"obb-{uuid.uuid4().hex}"}
    if priority is not None:
        headers["X-OBB-Priority"] = str(priority)
    if ttl is not None:
        headers["X-OBB-TTL"] = str(ttl)
    return body, headers


def should_retry(status: int, headers: Any) -> bool:
    """Connection errors, 429 and 5xx are retried, unless the server says not to."""
    if str(headers.get("x-should-retry", "")).lower() == "false":
        return False
    return status == 429 or status >= 500


MAX_RETRY_AFTER = 60.0
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(value: str, now: Optional[float] = None) -> Optional[float]:
    """The delay in seconds a `Retry-After` value asks for (RFC 9110 section 10.2.3), or
    None for junk, so that the caller falls back to its own backoff.

    Either form the RFC allows is read, with surrounding whitespace ignored:
    - delta-seconds (`120`); a fractional part (`1.5`) is accepted too, as some servers
      send one, but not a sign, an exponent, `inf` or `nan`;
    - an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`, or the RFC 850 and asctime forms),
      which gives the seconds from `now` (a Unix time, by default the current one) until
      that date; a date already past gives 0.

    Huge values are returned as they are (`inf` for a count too large for a float); the
    cap is the caller's: `retry_delay` waits at most `MAX_RETRY_AFTER`.
    """
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        date = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if date.tzinfo is None:
        # An asctime date names no zone; HTTP dates are always UTC.
        date = date.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(date.timestamp() - now, 0.0)


def retry_delay(attempt: int, headers: Any = None) -> float:
    """`Retry-After` when given (at most `MAX_RETRY_AFTER`), else exponential backoff with
    jitter."""
    value = None if headers is None else headers.get("retry-after")
    delay = None if value is None else parse_retry_after(value)
    if delay is not None:
        return min(delay, MAX_RETRY_AFTER)
    ceiling = min(0.5 * (2**attempt), 8.0)
    return ceiling / 2 + random.random() * ceiling / 2


def outcome(job: Job) -> Obj:
    """The completion of a finished job, or the exception its ending deserves."""
    status = job.get("status")
    if status == "completed":
        return wrap(job["result"])
    error = job.error
    message = f"job `{job.get('id')}` {status}"
    if error is not None and error.get("message"):
        message = f"{message}: {error['message']}"
    cls = {
        "cancelled": _errors.JobCancelledError,
        "expired": _errors.JobExpiredError,
    }.get(status, _errors.JobFailedError)
    raise cls(message, job, error)


def chunks(ids: Iterable[str]) -> List[List[str]]:
    ids = list(ids)
    return [ids[i : i + MAX_POLL_IDS] for i in range(0, len(ids), MAX_POLL_IDS)]


class Progress:
    """A one-line progress bar on stderr, for `wait_all(progress=True)`."""

    def __init__(self, total: int, enabled: bool, stream: Any = None) -> None:
        import sys

        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / self.total) if self.total else width
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} jobs")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
