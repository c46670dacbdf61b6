"""OpenBeepBoop's Python client: submit OpenAI-shaped chat completions as durable jobs and
collect the results."""
from ._async import AsyncClient, AsyncJobHandle
from ._client import Client, JobHandle
from ._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    JobCancelledError,
    JobError,
    JobExpiredError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    OpenBeepBoopError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from ._protocol import Job, Obj

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncJobHandle",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "InternalServerError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobExpiredError",
    "JobFailedError",
    "JobHandle",
    "JobTimeoutError",
    "NotFoundError",
    "Obj",
    "OpenBeepBoopError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
]
