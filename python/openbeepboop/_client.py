"""The synchronous client."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import httpx

from . import _errors
from ._protocol import (
    BATCH_PAGE,
    CHAT_COMPLETIONS,
    EMBEDDINGS,
    LONG_POLL,
    RESPONSES,
    Batch,
    BatchProgress,
    Job,
    Obj,
    Progress,
    Requests,
    batch_input,
    batch_results,
    batch_wait_step,
    chunks,
    create_batch_body,
    embeddings_request,
    new_idempotency_key,
    outcome,
    retry_delay,
    response_job,
    responses_request,
    rewind,
    settings,
    should_retry,
    submit_request,
    upload_parts,
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
        self.embeddings = Embeddings(self)
        self.responses = Responses(self)
        self.jobs = Jobs(self)
        self.files = Files(self)
        self.batches = Batches(self)

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
        files: Optional[Dict[str, Any]] = None,
        data: Optional[Dict[str, str]] = None,
        raw: bool = False,
    ) -> Any:
        """Sends a request with retries and returns the decoded JSON answer (the bytes with
        `raw`). `files` and `data` make a multipart body."""
        attempt = 0
        while True:
            rewind(files)
            try:
                response = self._http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers=headers,
                    files=files,
                    data=data,
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
                    time.sleep(retry_delay(attempt, response.headers, response.status_code))
                    attempt += 1
                    continue
                raise _errors.status_error(response.status_code, _decode(response))
            return response.content if raw else _decode(response)


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


class Embeddings:
    """`client.embeddings`: embeddings requests as jobs."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        model: str,
        input: Union[str, List[str], List[int], List[List[int]]],
        idempotency_key: Optional[str] = None,
        priority: Optional[int] = None,
        ttl: Optional[float] = None,
        **fields: Any,
    ) -> JobHandle:
        """Submits an embeddings request (`POST /v1/embeddings`) and returns at once with
        its job handle (status `queued`).

        `input` is a text, a list of texts, a list of token ids or a list of token-id lists
        (at most 2,048 items). `handle.get()` returns OpenAI's embeddings list: `.data[i]`
        is input `i`'s `{"object": "embedding", "index": i, "embedding": [float, ...]}`
        (a base64 string with `encoding_format="base64"`), and `.usage` counts
        `prompt_tokens` and `total_tokens`. Any other OpenAI field (`dimensions`,
        `encoding_format`, `user`) passes through. `priority` is 1 (first) to 5, `ttl` the
        seconds the job may wait in the queue. A node sends jobs of one model and the same
        fields upstream together, as one call."""
        body, headers = embeddings_request(model, input, idempotency_key, priority, ttl, fields)
        return JobHandle(self._client, self._client.request("POST", EMBEDDINGS, json=body, headers=headers))


class Responses:
    """`client.responses`: Responses API requests as jobs."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        model: str,
        input: Union[str, List[Dict[str, Any]]],
        idempotency_key: Optional[str] = None,
        priority: Optional[int] = None,
        ttl: Optional[float] = None,
        **fields: Any,
    ) -> JobHandle:
        """Submits a Responses API request (`POST /v1/responses`) in the background and
        returns at once with its job handle.

        The handle's id is the response id (`resp_...`), which `/v1/jobs/{id}` also reads,
        and its status `queued`; `handle.job.response` is the queued response object the
        gateway answered. `handle.get()` returns the finished response object (a
        `Response`): `.status`, `.output` (its items), `.output_text` (the text of its
        messages, joined) and `.usage` (`input_tokens`, `output_tokens`, `total_tokens`). `input` is a text or a
        list of input items; any other OpenAI field (`instructions`, `max_output_tokens`,
        `temperature`, `tools`, ...) passes through. `background` is always true and
        `stream` is dropped. `priority` is 1 (first) to 5, `ttl` the seconds the job may
        wait in the queue."""
        body, headers = responses_request(model, input, idempotency_key, priority, ttl, fields)
        response = self._client.request("POST", RESPONSES, json=body, headers=headers)
        return JobHandle(self._client, response_job(response))


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


class Files:
    """The Files API, for Batch API inputs and outputs."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        file: Any,
        *,
        purpose: str = "batch",
        filename: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Obj:
        """Uploads `file` (a path, bytes or an open binary file) and returns the file
        object. The upload carries an Idempotency-Key, so a retry stores it once."""
        files, data, opened = upload_parts(file, purpose, filename)
        try:
            return Obj(
                self._client.request(
                    "POST", "/v1/files", files=files, data=data,
                    headers={"Idempotency-Key": idempotency_key or new_idempotency_key()},
                )
            )
        finally:
            if opened is not None:
                opened.close()

    def retrieve(self, file_id: str) -> Obj:
        return Obj(self._client.request("GET", f"/v1/files/{file_id}"))

    def content(self, file_id: str) -> bytes:
        return self._client.request("GET", f"/v1/files/{file_id}/content", raw=True)

    def delete(self, file_id: str) -> Obj:
        return Obj(self._client.request("DELETE", f"/v1/files/{file_id}"))


class Batches:
    """The Batch API: `run` does it all (upload, create, wait, results); the other
    methods are its steps."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        input_file_id: str,
        endpoint: str = CHAT_COMPLETIONS,
        completion_window: str = "24h",
        metadata: Optional[Dict[str, str]] = None,
        idempotency_key: Optional[str] = None,
    ) -> Batch:
        body = create_batch_body(input_file_id, endpoint, completion_window, metadata)
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        return Batch(self._client.request("POST", "/v1/batches", json=body, headers=headers))

    def retrieve(self, batch_id: str) -> Batch:
        return Batch(self._client.request("GET", f"/v1/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> Batch:
        return Batch(self._client.request("POST", f"/v1/batches/{batch_id}/cancel"))

    def list(self, *, page_size: int = BATCH_PAGE) -> Iterator[Batch]:
        """Every batch of the caller, newest first, fetching pages as needed."""
        after = None
        while True:
            params: Dict[str, Any] = {"limit": page_size}
            if after:
                params["after"] = after
            page = self._client.request("GET", "/v1/batches", params=params)
            for batch in page["data"]:
                yield Batch(batch)
            if not page["has_more"]:
                return
            after = page["last_id"]

    def wait(
        self,
        batch_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: Optional[float] = None,
        progress: Union[bool, Callable[[Batch], Any]] = False,
    ) -> Batch:
        """Reads the batch every `poll_interval` seconds until it ends, and returns it.
        `progress=True` shows a bar of `request_counts` on stderr; a callable is called
        with the batch at each read. Raises `BatchTimeoutError` after `timeout` seconds
        (the batch goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        report = BatchProgress(progress)
        while True:
            batch = self.retrieve(batch_id)
            report(batch)
            pause = batch_wait_step(batch, deadline, timeout, poll_interval)
            if pause is None:
                return batch
            time.sleep(pause)

    def results(self, batch: Batch, order: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """The results of an ended batch keyed by custom_id: the response body of each
        completed request, a `BatchLineError` (returned, not raised) for each other one.
        Raises `BatchFailedError` for a batch that failed validation."""
        contents = [
            self._client.files.content(batch[field])
            for field in ("output_file_id", "error_file_id")
            if batch.get(field)
        ]
        return batch_results(batch, contents, order)

    def run(
        self,
        requests: Requests,
        *,
        endpoint: str = CHAT_COMPLETIONS,
        completion_window: str = "24h",
        metadata: Optional[Dict[str, str]] = None,
        poll_interval: float = 1.0,
        timeout: Optional[float] = None,
        progress: Union[bool, Callable[[Batch], Any]] = True,
    ) -> Dict[str, Any]:
        """Runs requests through the Batch API and returns their results keyed by
        custom_id, in input order (see `results`).

        `requests` is a list of request bodies (custom_ids `request-0`, `request-1`, ...,
        unless a body has a `custom_id` field), of `(custom_id, body)` pairs, or the path
        of a JSONL input file (`{"custom_id","method","url","body"}` lines)."""
        content, filename, order = batch_input(requests, endpoint)
        upload = self._client.files.create(content, filename=filename)
        batch = self.create(
            input_file_id=upload["id"], endpoint=endpoint,
            completion_window=completion_window, metadata=metadata,
        )
        batch = self.wait(batch["id"], poll_interval=poll_interval, timeout=timeout, progress=progress)
        return self.results(batch, order)
