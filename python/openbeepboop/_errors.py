"""Exceptions, named and shaped like the OpenAI SDK's, plus the job outcomes."""
from __future__ import annotations

from typing import Any, Optional


class OpenBeepBoopError(Exception):
    """The base of every error this library raises."""


class APIError(OpenBeepBoopError):
    def __init__(self, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body


class APIConnectionError(APIError):
    """The gateway could not be reached (after the retries)."""


class APITimeoutError(APIConnectionError):
    """The request timed out (after the retries)."""


class APIStatusError(APIError):
    """The gateway answered with an error status."""

    def __init__(self, message: str, *, status_code: int, body: Any = None) -> None:
        super().__init__(message, body=body)
        self.status_code = status_code


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(status_code: int, body: Any) -> APIStatusError:
    """The exception for an error answer, carrying the server's message."""
    message = f"error {status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = f"error {status_code}: {body['error'].get('message', '')}"
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    return cls(message, status_code=status_code, body=body)


class JobError(OpenBeepBoopError):
    """A job ended without a completion, or did not end in time."""

    def __init__(self, message: str, job: Any, error: Optional[Any] = None) -> None:
        super().__init__(message)
        self.job = job
        self.error = error


class JobFailedError(JobError):
    pass


class JobCancelledError(JobError):
    pass


class JobExpiredError(JobError):
    pass


class JobTimeoutError(JobError, TimeoutError):
    pass


class BatchError(OpenBeepBoopError):
    """A batch ended without results, or did not end in time. `.batch` is its last state."""

    def __init__(self, message: str, batch: Any) -> None:
        super().__init__(message)
        self.batch = batch


class BatchFailedError(BatchError):
    """The batch failed validation: `.errors` lists `{code, message, param, line}`."""

    @property
    def errors(self) -> Any:
        return (self.batch.get("errors") or {}).get("data") or []


class BatchTimeoutError(BatchError, TimeoutError):
    """The batch was still running when the wait ran out; it goes on, and
    `batches.wait(error.batch.id)` resumes waiting."""


class BatchLineError(OpenBeepBoopError):
    """A line of a batch that ended without a completion. It is returned, not raised, as the
    value of its `custom_id` in `batches.run`'s results: `status_code` and `body` for an
    upstream's refusal, else `code` (`batch_expired`, `batch_cancelled`, ...)."""

    def __init__(
        self,
        message: str,
        *,
        custom_id: str,
        status_code: Optional[int] = None,
        body: Any = None,
        code: Optional[str] = None,
        line: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.custom_id = custom_id
        self.status_code = status_code
        self.body = body
        self.code = code
        self.line = line

    def __repr__(self) -> str:
        return f"BatchLineError({self.message!r})"
