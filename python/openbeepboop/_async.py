"""The asynchronous client: `Client`'s methods as coroutines, on `httpx.AsyncClient`."""
from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Sequence, Union

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


class AsyncClient:
    """An asynchronous client of an OpenBeepBoop gateway; see `Client`."""

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
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        self.chat = _AsyncChat(self)
        self.embeddings = AsyncEmbeddings(self)
        self.responses = AsyncResponses(self)
        self.jobs = AsyncJobs(self)
        self.files = AsyncFiles(self)
        self.batches = AsyncBatches(self)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    async def request(
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
        attempt = 0
        while True:
            rewind(files)
            try:
                response = await self._http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers=headers,
                    files=files,
                    data=data,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as error:
                if attempt >= self.max_retries:
                    cls = (
                        _errors.APITimeoutError
                        if isinstance(error, httpx.TimeoutException)
                        else _errors.APIConnectionError
                    )
                    raise cls(f"cannot reach the gateway at {self.base_url}: {error}") from error
                await asyncio.sleep(retry_delay(attempt))
                attempt += 1
                continue
            if response.status_code >= 400:
                if should_retry(response.status_code, response.headers) and attempt < self.max_retries:
                    await asyncio.sleep(retry_delay(attempt, response.headers, response.status_code))
                    attempt += 1
                    continue
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                raise _errors.status_error(response.status_code, body)
            return response.content if raw else response.json()


class AsyncJobHandle:
    def __init__(self, client: AsyncClient, job: Dict[str, Any]) -> None:
        self._client = client
        self.job = Job(job)

    @property
    def id(self) -> str:
        return self.job["id"]

    @property
    def status(self) -> str:
        return self.job["status"]

    async def refresh(self, wait: float = 0) -> Job:
        params = {"wait": wait} if wait else None
        self.job = Job(
            await self._client.request(
                "GET", f"/v1/jobs/{self.id}", params=params, timeout=wait + 30
            )
        )
        return self.job

    async def get(self, wait: bool = True, timeout: Optional[float] = 60) -> Optional[Obj]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = LONG_POLL if deadline is None else deadline - time.monotonic()
            job = await self.refresh(wait=max(0.0, min(LONG_POLL, remaining)) if wait else 0)
            if job.is_finished:
                return outcome(job)
            if not wait:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                raise _errors.JobTimeoutError(
                    f"job `{self.id}` is still {job['status']} after {timeout} s", job
                )

    async def cancel(self) -> Job:
        self.job = Job(await self._client.request("POST", f"/v1/jobs/{self.id}/cancel"))
        return self.job


class AsyncCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        model: str,
        messages: List[Dict[str, Any]],
        idempotency_key: Optional[str] = None,
        priority: Optional[int] = None,
        ttl: Optional[float] = None,
        **fields: Any,
    ) -> AsyncJobHandle:
        body, headers = submit_request(model, messages, idempotency_key, priority, ttl, fields)
        job = await self._client.request("POST", "/v1/chat/completions", json=body, headers=headers)
        return AsyncJobHandle(self._client, job)

    async def create_many(
        self,
        requests: Sequence[Dict[str, Any]],
        *,
        batch_id: Optional[str] = None,
        max_concurrency: int = 16,
    ) -> List[AsyncJobHandle]:
        batch = batch_id or uuid.uuid4().hex
        limit = asyncio.Semaphore(max(1, max_concurrency))

        async def one(index: int, request: Dict[str, Any]) -> AsyncJobHandle:
            fields = dict(request)
            async with limit:
                return await self.create(
                    model=fields.pop("model"),
                    messages=fields.pop("messages"),
                    idempotency_key=fields.pop("idempotency_key", f"{batch}-{index}"),
                    **fields,
                )

        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))


class _AsyncChat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = AsyncCompletions(client)


class AsyncEmbeddings:
    """`client.embeddings`: embeddings requests as jobs; see `Embeddings`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        model: str,
        input: Union[str, List[str], List[int], List[List[int]]],
        idempotency_key: Optional[str] = None,
        priority: Optional[int] = None,
        ttl: Optional[float] = None,
        **fields: Any,
    ) -> AsyncJobHandle:
        """Submits an embeddings request and returns at once with its job handle; see
        `Embeddings.create` for the shapes of `input` and of the result."""
        body, headers = embeddings_request(model, input, idempotency_key, priority, ttl, fields)
        job = await self._client.request("POST", EMBEDDINGS, json=body, headers=headers)
        return AsyncJobHandle(self._client, job)


class AsyncResponses:
    """`client.responses`: Responses API requests as jobs; see `Responses`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        model: str,
        input: Union[str, List[Dict[str, Any]]],
        idempotency_key: Optional[str] = None,
        priority: Optional[int] = None,
        ttl: Optional[float] = None,
        **fields: Any,
    ) -> AsyncJobHandle:
        """Submits a Responses API request in the background and returns at once with its
        job handle (id `resp_...`, status `queued`); see `Responses.create`."""
        body, headers = responses_request(model, input, idempotency_key, priority, ttl, fields)
        response = await self._client.request("POST", RESPONSES, json=body, headers=headers)
        return AsyncJobHandle(self._client, response_job(response))


class AsyncJobs:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get(self, job_id: str) -> Job:
        return Job(await self._client.request("GET", f"/v1/jobs/{job_id}"))

    async def poll(self, ids: Sequence[str]) -> List[Job]:
        found: List[Job] = []
        for part in chunks(ids):
            answer = await self._client.request("POST", "/v1/results/poll", json={"ids": part})
            found.extend(Job(job) for job in answer["jobs"])
        return found

    async def list(self, status: Optional[str] = None, *, page_size: int = 100) -> AsyncIterator[Job]:
        after = None
        while True:
            params: Dict[str, Any] = {"limit": page_size}
            if status:
                params["status"] = status
            if after:
                params["after"] = after
            page = await self._client.request("GET", "/v1/jobs", params=params)
            for job in page["data"]:
                yield Job(job)
            if not page["has_more"]:
                return
            after = page["last_id"]

    async def wait_all(
        self,
        handles: Sequence[AsyncJobHandle],
        timeout: Optional[float] = None,
        *,
        progress: bool = False,
    ) -> List[Job]:
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
            await self._client.request(
                "GET", f"/v1/jobs/{pending[0]}", params={"wait": wait}, timeout=wait + 30
            )
            for job in await self.poll(pending):
                jobs[job["id"]] = job


class AsyncFiles:
    """The Files API; see `Files`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        file: Any,
        *,
        purpose: str = "batch",
        filename: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Obj:
        files, data, opened = upload_parts(file, purpose, filename)
        try:
            return Obj(
                await self._client.request(
                    "POST", "/v1/files", files=files, data=data,
                    headers={"Idempotency-Key": idempotency_key or new_idempotency_key()},
                )
            )
        finally:
            if opened is not None:
                opened.close()

    async def retrieve(self, file_id: str) -> Obj:
        return Obj(await self._client.request("GET", f"/v1/files/{file_id}"))

    async def content(self, file_id: str) -> bytes:
        return await self._client.request("GET", f"/v1/files/{file_id}/content", raw=True)

    async def delete(self, file_id: str) -> Obj:
        return Obj(await self._client.request("DELETE", f"/v1/files/{file_id}"))


class AsyncBatches:
    """The Batch API; see `Batches`. A `progress` callable may be a coroutine function."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
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
        return Batch(await self._client.request("POST", "/v1/batches", json=body, headers=headers))

    async def retrieve(self, batch_id: str) -> Batch:
        return Batch(await self._client.request("GET", f"/v1/batches/{batch_id}"))

    async def cancel(self, batch_id: str) -> Batch:
        return Batch(await self._client.request("POST", f"/v1/batches/{batch_id}/cancel"))

    async def list(self, *, page_size: int = BATCH_PAGE) -> AsyncIterator[Batch]:
        after = None
        while True:
            params: Dict[str, Any] = {"limit": page_size}
            if after:
                params["after"] = after
            page = await self._client.request("GET", "/v1/batches", params=params)
            for batch in page["data"]:
                yield Batch(batch)
            if not page["has_more"]:
                return
            after = page["last_id"]

    async def wait(
        self,
        batch_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: Optional[float] = None,
        progress: Union[bool, Callable[[Batch], Any]] = False,
    ) -> Batch:
        deadline = None if timeout is None else time.monotonic() + timeout
        report = BatchProgress(progress)
        while True:
            batch = await self.retrieve(batch_id)
            reported = report(batch)
            if inspect.isawaitable(reported):
                await reported
            pause = batch_wait_step(batch, deadline, timeout, poll_interval)
            if pause is None:
                return batch
            await asyncio.sleep(pause)

    async def results(self, batch: Batch, order: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        contents = [
            await self._client.files.content(batch[field])
            for field in ("output_file_id", "error_file_id")
            if batch.get(field)
        ]
        return batch_results(batch, contents, order)

    async def run(
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
        content, filename, order = batch_input(requests, endpoint)
        upload = await self._client.files.create(content, filename=filename)
        batch = await self.create(
            input_file_id=upload["id"], endpoint=endpoint,
            completion_window=completion_window, metadata=metadata,
        )
        batch = await self.wait(
            batch["id"], poll_interval=poll_interval, timeout=timeout, progress=progress
        )
        return await self.results(batch, order)
