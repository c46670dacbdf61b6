"""What both clients share: objects with attribute access, request building, answer
parsing, and the retry and wait rules. No I/O happens here."""
from __future__ import annotations

import email.utils
import json
import os
import random
import re
import time
import uuid
from datetime import timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

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


def submit_headers(
    idempotency_key: Optional[str], priority: Optional[int], ttl: Optional[float]
) -> Dict[str, str]:
    """The headers of a submit to any endpoint. Every submit carries an Idempotency-Key, so
    that a retry after a lost answer never creates a second job; `priority` is 1 (first) to
    5, `ttl` the seconds a job may wait in the queue."""
    headers = {"Idempotency-Key": idempotency_key or f"obb-{uuid.uuid4().hex}"}
    if priority is not None:
        headers["X-OBB-Priority"] = str(priority)
    if ttl is not None:
        headers["X-OBB-TTL"] = str(ttl)
    return headers


def without_stream(fields: Dict[str, Any]) -> Dict[str, Any]:
    """`fields` less `stream` and `stream_options`: this client submits jobs and reads their
    results, and the gateway answers a `stream: true` request with an event stream rather
    than a job."""
    return {k: v for k, v in fields.items() if k not in ("stream", "stream_options")}


def submit_request(
    model: str,
    messages: List[Dict[str, Any]],
    idempotency_key: Optional[str],
    priority: Optional[int],
    ttl: Optional[float],
    fields: Dict[str, Any],
) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The body and headers of a chat completion submit (see `submit_headers`);
    `stream` and `stream_options` are dropped (see `without_stream`)."""
    body = {"model": model, "messages": messages, **without_stream(fields)}
    return body, submit_headers(idempotency_key, priority, ttl)


EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"


def embeddings_request(
    model: str,
    input: Any,
    idempotency_key: Optional[str],
    priority: Optional[int],
    ttl: Optional[float],
    fields: Dict[str, Any],
) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The body and headers of an embeddings submit (`POST /v1/embeddings`). `input` is
    sent as given: a text, a list of texts, a list of token ids or a list of token-id
    lists; the gateway refuses any other shape with a 400 naming the item at fault."""
    return {"model": model, "input": input, **fields}, submit_headers(idempotency_key, priority, ttl)


def responses_request(
    model: str,
    input: Any,
    idempotency_key: Optional[str],
    priority: Optional[int],
    ttl: Optional[float],
    fields: Dict[str, Any],
) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The body and headers of a Responses API submit (`POST /v1/responses`). `background`
    is always true, so that the gateway answers at once with the queued response rather
    than holding the request until it is done; `stream` and `stream_options` are dropped
    (see `without_stream`). `input` is a text or a list of input items, as OpenAI takes it."""
    body = {"model": model, "input": input, **without_stream(fields), "background": True}
    return body, submit_headers(idempotency_key, priority, ttl)


# A response's `status` -> the status of its job.
_RESPONSE_STATUS = {
    "in_progress": "processing",
    "completed": "completed",
    "incomplete": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}


def response_job(response: Dict[str, Any]) -> Dict[str, Any]:
    """The job a background response stands for, as `/v1/jobs/{id}` would show it before
    its next read: the response's id is the job's id, its `queued` status the job's (an
    `in_progress` response is a `processing` job), and the response itself is kept under
    `response`."""
    return {
        "id": response["id"],
        "object": "response.job",
        "endpoint": RESPONSES,
        "model": response.get("model"),
        "status": _RESPONSE_STATUS.get(response.get("status"), "queued"),
        "created_at": response.get("created_at"),
        "response": response,
    }


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


_RESET_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")


def parse_reset(value: str) -> Optional[float]:
    """The seconds an OpenAI `x-ratelimit-reset-*` value gives: numbers with units `h`, `m`,
    `s` or `ms`, as Go prints a duration (`6m0s`, `1s`, `250ms`, `1.5s`), or None for junk."""
    value = value.strip()
    parts = list(_RESET_PART.finditer(value))
    if not value or "".join(part.group(0) for part in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(part.group(1)) * scale[part.group(2)] for part in parts)


def asked_delay(headers: Any, status: Optional[int] = None) -> Optional[float]:
    """The seconds an answer's headers ask a client to wait before a retry, read as OpenAI's
    SDKs and API write them, first found wins: `retry-after-ms` (milliseconds), then
    `Retry-After`; on a 429 with neither, the longest `x-ratelimit-reset-{requests,tokens}`
    of a budget whose `x-ratelimit-remaining-*` is `0`. None when nothing applies."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None and _DELTA_SECONDS.fullmatch(value.strip()):
        return float(value) / 1000
    value = headers.get("retry-after")
    delay = None if value is None else parse_retry_after(value)
    if delay is not None or status != 429:
        return delay
    resets = [
        parse_reset(headers.get(f"x-ratelimit-reset-{budget}") or "")
        for budget in ("requests", "tokens")
        if (headers.get(f"x-ratelimit-remaining-{budget}") or "").strip() == "0"
    ]
    resets = [reset for reset in resets if reset is not None]
    return max(resets) if resets else None


def retry_delay(attempt: int, headers: Any = None, status: Optional[int] = None) -> float:
    """The delay the answer asks for (see `asked_delay`; at most `MAX_RETRY_AFTER`), else
    exponential backoff with jitter."""
    delay = asked_delay(headers, status)
    if delay is not None:
        return min(delay, MAX_RETRY_AFTER)
    ceiling = min(0.5 * (2**attempt), 8.0)
    return ceiling / 2 + random.random() * ceiling / 2


class Response(Obj):
    """A Responses API `response` object: `.id` (`resp_...`), `.status`, `.output` (its
    items), `.usage` (`input_tokens`, `output_tokens`, `total_tokens`)."""

    @property
    def output_text(self) -> str:
        """The text of every `output_text` part of every output message, joined, as the
        OpenAI SDK's `response.output_text` gives it."""
        return "".join(
            part.get("text", "")
            for item in self.get("output") or []
            if item.get("type") == "message"
            for part in item.get("content") or []
            if part.get("type") == "output_text"
        )


def outcome(job: Job) -> Obj:
    """The result of a finished job (a `Response` for a response's job), or the exception
    its ending deserves."""
    status = job.get("status")
    if status == "completed":
        if job.get("endpoint") == "/v1/responses":
            return Response(job["result"])
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


# The Batch API: `/v1/files` and `/v1/batches`.

CHAT_COMPLETIONS = "/v1/chat/completions"
BATCH_FINAL = ("completed", "failed", "expired", "cancelled")
BATCH_PAGE = 100
JSONL = "application/jsonl"

Requests = Union[str, "os.PathLike[str]", Sequence[Any]]


class Batch(Obj):
    """A batch object of the gateway (OpenAI's shape)."""

    @property
    def is_finished(self) -> bool:
        return self.get("status") in BATCH_FINAL


def new_idempotency_key() -> str:
    return f"obb-{uuid.uuid4().hex}"


def upload_parts(file: Any, purpose: str, filename: Optional[str]) -> Tuple[Dict[str, Any], Dict[str, str], Any]:
    """The multipart `files` and `data` of an upload, and the file this opened (to close).
    `file` is a path, bytes, or an open binary file."""
    opened = None
    if isinstance(file, (str, os.PathLike)):
        opened = content = open(file, "rb")
        name = filename or os.path.basename(os.fspath(file))
    else:
        content = file
        name = filename or os.path.basename(str(getattr(file, "name", ""))) or "requests.jsonl"
    return {"file": (name, content, JSONL)}, {"purpose": purpose}, opened


def rewind(files: Optional[Dict[str, Any]]) -> None:
    """Puts the files of a multipart body back at their start, before a (re)send."""
    for _, content, _ in (files or {}).values():
        if hasattr(content, "seek"):
            content.seek(0)


def batch_item(index: int, item: Any) -> Tuple[str, Dict[str, Any]]:
    """The custom_id and request body of one item of `batches.run`: a body (custom_id
    `request-<index>`, or its own `custom_id` field), a `(custom_id, body)` pair, or a whole
    input line `{"custom_id", "body", ...}`."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return str(item[0]), dict(item[1])
    if not isinstance(item, dict):
        raise TypeError(f"request {index} is neither a body, a (custom_id, body) pair nor a line")
    if "body" in item and "custom_id" in item:
        return str(item["custom_id"]), dict(item["body"])
    body = dict(item)
    return str(body.pop("custom_id", f"request-{index}")), body


def batch_input(requests: Requests, endpoint: str) -> Tuple[Any, Optional[str], List[str]]:
    """What `batches.run` uploads: a path as it is, or a list of requests as JSONL bytes,
    with its filename and the custom_ids in input order."""
    if isinstance(requests, (str, os.PathLike)):
        return requests, None, custom_ids_of(requests)
    ids: List[str] = []
    lines: List[str] = []
    for index, item in enumerate(requests):
        custom_id, body = batch_item(index, item)
        ids.append(custom_id)
        line = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
        lines.append(json.dumps(line, separators=(",", ":")) + "\n")
    if not ids:
        raise ValueError("a batch needs at least one request")
    seen: set = set()
    for custom_id in ids:
        if custom_id in seen:
            raise ValueError(f"custom_id `{custom_id}` is used twice: each request needs its own")
        seen.add(custom_id)
    return "".join(lines).encode(), "requests.jsonl", ids


def custom_ids_of(path: Any) -> List[str]:
    """The custom_ids of a JSONL input file, in order (lines the gateway will refuse are
    skipped here: the batch fails with their line numbers)."""
    ids: List[str] = []
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                custom_id = json.loads(raw).get("custom_id")
            except (ValueError, AttributeError):
                continue
            if isinstance(custom_id, str):
                ids.append(custom_id)
    return ids


def create_batch_body(
    input_file_id: str, endpoint: str, completion_window: str, metadata: Optional[Dict[str, str]]
) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": completion_window,
    }
    if metadata:
        body["metadata"] = metadata
    return body


def batch_wait_step(batch: Batch, deadline: Optional[float], timeout: Optional[float], poll_interval: float) -> Optional[float]:
    """None when the batch has ended, else how long to sleep before the next read; raises
    `BatchTimeoutError` once `deadline` has passed."""
    if batch.is_finished:
        return None
    if deadline is None:
        return poll_interval
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        counts = batch.get("request_counts") or {}
        raise _errors.BatchTimeoutError(
            f"batch `{batch.get('id')}` is still {batch.get('status')} after {timeout} s "
            f"({counts.get('completed', 0) + counts.get('failed', 0)}/{counts.get('total', 0)} done)",
            batch,
        )
    return min(poll_interval, remaining)


class BatchProgress:
    """What `batches.wait` reports at each read: `progress` itself when it is a callable
    (called with the batch; it may return an awaitable for `AsyncClient`), else with
    `progress=True` a one-line bar on stderr of the lines done out of `request_counts.total`."""

    def __init__(self, progress: Union[bool, Callable[[Batch], Any]], stream: Any = None) -> None:
        import sys

        self.callback = progress if callable(progress) else None
        self.enabled = bool(progress)
        self.stream = stream or sys.stderr
        self.last = ""

    def __call__(self, batch: Batch) -> Any:
        if self.callback is not None:
            return self.callback(batch)
        if not self.enabled:
            return None
        counts = batch.get("request_counts") or {}
        total = counts.get("total", 0)
        failed = counts.get("failed", 0)
        done = counts.get("completed", 0) + failed
        width = 30
        filled = min(width, int(width * done / total)) if total else 0
        text = f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} requests"
        if failed:
            text += f", {failed} failed"
        text += f" ({batch.get('status')})"
        if text != self.last:
            # Padded to cover the longer line it overwrites.
            self.stream.write(text.ljust(len(self.last)) + ("\n" if batch.is_finished else ""))
            self.stream.flush()
            self.last = text
        return None


def parse_jsonl(content: bytes) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in content.splitlines() if line.strip()]


def line_outcome(line: Dict[str, Any]) -> Any:
    """The response body of an output line, or the `BatchLineError` of an error line."""
    custom_id = line.get("custom_id")
    response = line.get("response")
    error = line.get("error")
    if response is not None and error is None and response.get("status_code", 200) < 400:
        return wrap(response.get("body"))
    if response is not None:
        status, body = response.get("status_code"), response.get("body")
        detail = body.get("error") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, dict) else {}
        return _errors.BatchLineError(
            f"request `{custom_id}` failed with status {status}: {detail.get('message', body)}",
            custom_id=custom_id, status_code=status, body=wrap(body), code=detail.get("code"),
            line=wrap(line),
        )
    error = error or {}
    return _errors.BatchLineError(
        f"request `{custom_id}` failed: {error.get('code')}: {error.get('message')}",
        custom_id=custom_id, code=error.get("code"), line=wrap(line),
    )


def batch_results(batch: Batch, contents: Sequence[bytes], order: Optional[Sequence[str]]) -> Dict[str, Any]:
    """The results of an ended batch keyed by custom_id, from its output and error files'
    contents: in `order` when given (then in file order), each the response body or a
    `BatchLineError`. A failed batch raises `BatchFailedError`."""
    if batch.get("status") == "failed":
        errors = (batch.get("errors") or {}).get("data") or []
        shown = "; ".join(f"line {e.get('line')}: {e.get('message')}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise _errors.BatchFailedError(f"batch `{batch.get('id')}` failed: {shown}{more}", batch)
    found: Dict[str, Any] = {}
    for content in contents:
        for line in parse_jsonl(content):
            found[line.get("custom_id")] = line_outcome(line)
    results: Dict[str, Any] = {}
    for custom_id in order or ():
        if custom_id in found:
            results[custom_id] = found.pop(custom_id)
        else:
            results[custom_id] = _errors.BatchLineError(
                f"request `{custom_id}` has no result in batch `{batch.get('id')}` ({batch.get('status')})",
                custom_id=custom_id, code="missing_result",
            )
    results.update(found)
    return results
