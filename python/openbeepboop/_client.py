"""The synchronous client."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Sequence

import httpx

from . import _errors
from ._protocol import (
    LONG_POLL,
    Job,
    Obj,
    Progress,
    chunks,
    outcome,
    retry_delay,
    settings,
    should_retry,
    submit_request,
)


class Client:
    """A client of an OpenBeepBoop gateway.

    `base_url` and `api_key` default to `OBB_BASE_URL` and `OBB_API_KEY`. Connection
    errors, 429 and 5xx are retried `max_retries` times with backoff, honouring
    `Retry-After`; submits carry an Idempotency-Key, so a retry never duplicates a job.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
    ) -> None:
        self.base_url, self.api_key = settings(base_url, api_key)
        self.max_retries = max_retries
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        self.chat = _Chat(self)
        self.jobs = Jobs(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Dict[str, Any]] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Sends a request with retries and returns the decoded JSON answer."""
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TimeoutException as error:
                if attempt >= self.max_retries:
                    raise _errors.APITimeoutError(f"request to {path} timed out: {error}") from error
                time.sleep(retry_delay(attempt))
                attempt += 1
                continue
            except httpx.TransportError as error:
                if attempt >= self.max_retries:
                    raise _errors.APIConnectionError(
                        f"cannot reach the gateway at {self.base_url}: {error}"
                    ) from error
                time.sleep(retry_delay(attempt))
                attempt += 1
                continue
            if response.status_code >= 400:
                if should_retry(response.status_code, response.headers) and attempt < self.max_retries:
                    time.sleep(retry_delay(attempt, response.headers))
                    attempt += 1
                    continue
                raise _errors.status_error(response.status_code, _decode(response))
            return _decode(response)


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class JobHandle:
    """A submitted job: `.id`, `.status`, `.get()`, `.cancel()`."""

    def __init__(self, client: Client, job: Dict[str, Any]) -> None:
        self._client = client
        self.job = Job(job)

    @property
    def id(self) -> str:
        return self.job["id"]

    @property
    def status(self) -> str:
        return self.job["status"]

    def refresh(self, wait: float = 0) -> Job:
        params = {"wait": wait} if wait else None
        self.job = Job(
            self._client.request(
                "GET", f"/v1/jobs/{self.id}", params=params, timeout=wait + 30
            )
        )
        return self.job

    def get(self, wait: bool = True, timeout: Optional[float] = 60) -> Optional[Obj]:
        """The completion. With `wait`, long-polls until the job ends or `timeout` runs out
        (raising `JobTimeoutError`); without, returns `None` while it runs. Raises
        `JobFailedError`, `JobCancelledError` or `JobExpiredError` for those endings."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = LONG_POLL if deadline is None else deadline - time.monotonic()
            job = self.refresh(wait=max(0.0, min(LONG_POLL, remaining)) if wait else 0)
            if job.is_finished:
                return outcome(job)
            if not wait:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                raise _errors.JobTimeoutError(
                    f"job `{self.id}` is still {job['status']} after {timeout} s", job
                )

    def cancel(self) -> Job:
        self.job = Job(self._client.request("POST", f"/v1/jobs/{self.id}/cancel"))
        return self.job

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r}, status={self.status!r})"


class Completions:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        model: str,
        messages: List[Dict[str, Any]],
        idempotency_key: Optional[str] = None,
        priority: Optional[int] = None,
        ttl: Optional[float] = None,
        **fields: Any,
    ) -> JobHandle:
        """Submits a chat completion and returns at once with its job handle. Any OpenAI
        field (temperature, tools, response_format, seed, ...) passes through."""
        body, headers = submit_request(model, messages, idempotency_key, priority, ttl, fields)
        job = self._client.request("POST", "/v1/chat/completions", json=body, headers=headers)
        return JobHandle(self._client, job)

    def create_many(
        self,
        requests: Sequence[Dict[str, Any]],
        *,
        batch_id: Optional[str] = None,
        max_concurrency: int = 16,
    ) -> List[JobHandle]:
        """Submits many requests concurrently. Request `i` uses the Idempotency-Key
        `{batch_id}-{i}`: calling again with the same `batch_id` returns the same jobs."""
        batch = batch_id or uuid.uuid4().hex
        with ThreadPoolExecutor(max_workers=max(1, max_concurrency)) as pool:
            futures = [
                pool.submit(self._create_one, request, f"{batch}-{index}")
                for index, request in enumerate(requests)
            ]
            return [future.result() for future in futures]

    def _create_one(self, request: Dict[str, Any], key: str) -> JobHandle:
        fields = dict(request)
        return self.create(
            model=fields.pop("model"),
            messages=fields.pop("messages"),
            idempotency_key=fields.pop("idempotency_key", key),
            **fields,
        )


class _Chat:
    def __init__(self, client: Client) -> None:
        self.completions = Completions(client)


class Jobs:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, job_id: str) -> Job:
        return Job(self._client.request("GET", f"/v1/jobs/{job_id}"))

    def poll(self, ids: Sequence[str]) -> List[Job]:
        """The jobs of `ids`, in order; unknown ids come back with status `not_found`."""
        found: List[Job] = []
        for part in chunks(ids):
            answer = self._client.request("POST", "/v1/results/poll", json={"ids": part})
            found.extend(Job(job) for job in answer["jobs"])
        return found

    def list(self, status: Optional[str] = None, *, page_size: int = 100) -> Iterator[Job]:
        """Every job of the caller, newest first, fetching pages as needed."""
        after = None
        while True:
            params: Dict[str, Any] = {"limit": page_size}
            if status:
                params["status"] = status
            if after:
                params["after"] = after
            page = self._client.request("GET", "/v1/jobs", params=params)
            for job in page["data"]:
                yield Job(job)
            if not page["has_more"]:
                return
            after = page["last_id"]

    def wait_all(
        self,
        handles: Sequence[JobHandle],
        timeout: Optional[float] = None,
        *,
        progress: bool = False,
    ) -> List[Job]:
        """Waits until every job ends and returns them in order, each with `.result` or
        `.error`. Long-polls the oldest unfinished job, then polls the rest in one call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        jobs: Dict[str, Job] = {handle.id: handle.job for handle in handles}
        bar = Progress(len(handles), progress)
        while True:
            pending = [job_id for job_id, job in jobs.items() if not job.is_finished]
            bar.update(len(jobs) - len(pending))
            if not pending:
                return [jobs[handle.id] for handle in handles]
            remaining = LONG_POLL if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise _errors.JobTimeoutError(
                    f"{len(pending)} jobs still unfinished after {timeout} s", pending
                )
            wait = max(0.0, min(LONG_POLL, remaining))
            self._client.request(
                "GET", f"/v1/jobs/{pending[0]}", params={"wait": wait}, timeout=wait + 30
            )
            for job in self.poll(pending):
                jobs[job["id"]] = job
