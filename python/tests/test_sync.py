import email.utils
import io
import time

import pytest

import openbeepboop as obb
from openbeepboop._protocol import Progress, parse_reset, parse_retry_after, retry_delay

HELLO = [{"role": "user", "content": "Hello!"}]


@pytest.fixture
def client(stack):
    with obb.Client(base_url=stack.base_url, api_key=stack.user) as client:
        yield client


def test_create_returns_a_handle_and_get_waits_for_the_completion(client):
    handle = client.chat.completions.create(model="echo", messages=HELLO, temperature=0.1, seed=7)
    assert handle.id.startswith("job-") and handle.status == "queued"
    result = handle.get(wait=True, timeout=30)
    assert result.choices[0].message.content == "echo: Hello!"
    assert handle.status == "completed" and "JobHandle" in repr(handle)


def test_a_request_asking_for_a_stream_still_becomes_a_job(client):
    handle = client.chat.completions.create(
        model="echo", messages=HELLO, stream=True, stream_options={"include_usage": True})
    assert handle.id.startswith("job-")
    assert handle.get(wait=True, timeout=30).choices[0].message.content == "echo: Hello!"


def test_get_without_wait_returns_none_until_done_and_times_out_with_wait(client):
    handle = client.chat.completions.create(model="nobody-serves", messages=HELLO, priority=1)
    assert handle.get(wait=False) is None
    with pytest.raises(obb.JobTimeoutError) as caught:
        handle.get(wait=True, timeout=0.5)
    assert caught.value.job["status"] == "queued"
    assert handle.cancel()["status"] == "cancelled"
    with pytest.raises(obb.JobCancelledError, match="cancelled"):
        handle.get()


def test_expired_and_failed_jobs_raise_their_own_errors(client, stack):
    expiring = client.chat.completions.create(model="nobody-serves", messages=HELLO, ttl=1)
    with pytest.raises(obb.JobExpiredError) as expired:
        expiring.get(timeout=30)
    assert expired.value.error.code == "job_expired"

    failing = client.chat.completions.create(model="fails", messages=HELLO)
    job, submit = stack.act_as_node("fails")
    assert job["id"] == failing.id
    submit({"status": "FAILED", "upstream_status": 400, "retryable": False,
            "error": {"message": "bad prompt", "type": "invalid_request_error", "param": None, "code": None}})
    with pytest.raises(obb.JobFailedError, match="bad prompt"):
        failing.get(timeout=30)


def test_poll_get_and_list_show_jobs_with_pagination(client):
    handles = [client.chat.completions.create(model="echo", messages=HELLO) for _ in range(3)]
    for handle in handles:
        handle.get(timeout=30)
    polled = client.jobs.poll([h.id for h in handles] + ["job-unknown"])
    assert [job.is_completed for job in polled] == [True, True, True, False]
    assert polled[0].result.choices[0].message.content == "echo: Hello!"
    assert polled[3].status == "not_found" and polled[3].error.code == "not_found"
    assert client.jobs.get(handles[0].id).is_finished
    listed = list(client.jobs.list(status="completed", page_size=2))
    assert {h.id for h in handles} <= {job.id for job in listed}
    assert len(listed) >= 3


def test_create_many_is_idempotent_per_batch_and_wait_all_shows_progress(client, capsys):
    requests = [{"model": "echo", "messages": [{"role": "user", "content": f"n{i}"}]} for i in range(5)]
    first = client.chat.completions.create_many(requests, batch_id="batch-42")
    again = client.chat.completions.create_many(requests, batch_id="batch-42")
    assert [h.id for h in first] == [h.id for h in again], "a retried batch creates no new jobs"
    jobs = client.jobs.wait_all(first, timeout=60, progress=True)
    assert [job.result.choices[0].message.content for job in jobs] == [f"echo: n{i}" for i in range(5)]
    assert "5/5 jobs" in capsys.readouterr().err
    stuck = client.chat.completions.create(model="nobody-serves", messages=HELLO)
    with pytest.raises(obb.JobTimeoutError):
        client.jobs.wait_all([stuck], timeout=0.3)
    stuck.cancel()


def test_server_errors_map_to_the_openai_exception_types(client, stack):
    with pytest.raises(obb.AuthenticationError) as auth:
        obb.Client(base_url=stack.base_url, api_key="sk-obb-wrong").jobs.get("job-x")
    assert auth.value.status_code == 401 and "invalid API key" in str(auth.value)
    with pytest.raises(obb.PermissionDeniedError):
        obb.Client(base_url=stack.base_url + "/v1", api_key=stack.node_key).jobs.get("job-x")
    with pytest.raises(obb.NotFoundError):
        client.jobs.get("job-unknown")
    with pytest.raises(obb.BadRequestError, match="messages"):
        client.chat.completions.create(model="echo", messages=[])
    with pytest.raises(obb.UnprocessableEntityError):
        client.chat.completions.create(model="echo", messages=HELLO, idempotency_key="same")
        client.chat.completions.create(model="other", messages=HELLO, idempotency_key="same")
    done = client.chat.completions.create(model="echo", messages=HELLO)
    done.get(timeout=30)
    with pytest.raises(obb.ConflictError):
        done.cancel()


def test_transient_errors_are_retried_honouring_retry_after(scripted):
    base, server = scripted
    server.script = [(429, {"retry-after": "0"}), (503, {}), (200, {})]
    client = obb.Client(base_url=base, api_key="k", max_retries=3)
    handle = client.chat.completions.create(model="m", messages=HELLO)
    assert handle.id == "job-x"
    keys = {seen[2].get("Idempotency-Key") or seen[2].get("idempotency-key") for seen in server.seen}
    assert len(server.seen) == 3 and len(keys) == 1, "every retry carries the same key"

    server.script = [(429, {"retry-after": "0"})] * 2
    with pytest.raises(obb.RateLimitError):
        obb.Client(base_url=base, api_key="k", max_retries=1).jobs.get("job-x")
    server.script = [(500, {"retry-after": "0"})] * 2
    with pytest.raises(obb.InternalServerError):
        obb.Client(base_url=base, api_key="k", max_retries=1).jobs.get("job-x")
    server.script = [(502, {"x-should-retry": "false"})]
    with pytest.raises(obb.InternalServerError):
        obb.Client(base_url=base, api_key="k", max_retries=3).jobs.get("job-x")
    assert len(server.seen) == 3 + 2 + 2 + 1, "x-should-retry: false is not retried"
    server.script = [(418, {})]
    with pytest.raises(obb.APIStatusError) as teapot:
        obb.Client(base_url=base, api_key="k").jobs.get("job-x")
    assert teapot.value.status_code == 418


def future_http_date(seconds: float):
    """An HTTP-date about `seconds` ahead, and the instant it names (whole seconds)."""
    date = email.utils.formatdate(time.time() + seconds, usegmt=True)
    return date, email.utils.parsedate_to_datetime(date).timestamp()


def test_a_retry_after_http_date_is_waited_for_and_a_past_one_is_not(scripted):
    base, server = scripted
    # The first backoff without Retry-After is at most 0.5 s; the date is at least 1 s ahead.
    date, not_before = future_http_date(2)
    server.script = [
        (503, {"retry-after": date}),
        (429, {"retry-after": "Sun, 06 Nov 1994 08:49:37 GMT"}),
        (200, {}),
    ]
    assert obb.Client(base_url=base, api_key="k", max_retries=3).jobs.get("job-x").id == "job-x"
    arrivals = [seen[3] for seen in server.seen]
    assert len(arrivals) == 3, "both errors were retried, the past date at once"
    # 10 ms of slack for float rounding of Unix times; a backoff would be 0.5 s early.
    assert arrivals[1] >= not_before - 0.01, f"retried {not_before - arrivals[1]:.3f} s early"


def test_retry_after_reads_delta_seconds_and_http_dates():
    rfc_example = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    now = rfc_example - 30
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("0", now) == 0.0
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after(" \t7 ", now) == 7.0
    for date in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"):
        assert parse_retry_after(date, now) == 30.0, date
        assert parse_retry_after(f"  {date} ", now) == 30.0, date
        assert parse_retry_after(date, rfc_example + 3600) == 0.0, "a past date asks for no delay"
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example) == 0.0
    assert 0 < parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") < float("inf")
    date, at = future_http_date(5)
    assert 0 < parse_retry_after(date) <= 5.0
    for junk in ("", "  ", "soon", "-1", "+1", "1e3", "inf", "nan", "1.", ".5", "1 0", "0x10", "5s",
                 "\u0661\u0662", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT",
                 "Sun, 06 Nov 99999 08:49:37 GMT"):
        assert parse_retry_after(junk, now) is None, repr(junk)
    assert parse_retry_after("9" * 400, now) == float("inf")
    # The cap is the caller's: huge values and far dates wait 60 s, junk falls back to backoff.
    assert retry_delay(0, {"retry-after": "9" * 400}) == 60.0
    assert retry_delay(0, {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}) == 60.0
    assert retry_delay(0, {"retry-after": "Sun, 06 Nov 1994 08:49:37 GMT"}) == 0.0
    assert 0.25 <= retry_delay(0, {"retry-after": "later"}) <= 0.5
    assert 0.25 <= retry_delay(0, {}) <= 0.5


def test_a_429_with_only_a_spent_budgets_reset_is_retried_after_that_reset(scripted):
    base, server = scripted
    # The first backoff without a hint is at most 0.5 s; the budget resets in 1.5 s.
    server.script = [
        (429, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1500ms",
               "x-ratelimit-remaining-tokens": "90", "x-ratelimit-reset-tokens": "9s"}),
        (200, {}),
    ]
    assert obb.Client(base_url=base, api_key="k", max_retries=2).jobs.get("job-x").id == "job-x"
    arrivals = [seen[3] for seen in server.seen]
    assert len(arrivals) == 2
    assert 1.45 <= arrivals[1] - arrivals[0] < 5.0, arrivals


def test_openais_retry_headers_are_read_as_its_sdks_read_them():
    assert parse_reset("6m0s") == 360.0
    assert parse_reset("250ms") == 0.25
    assert parse_reset("1.5s") == 1.5
    assert parse_reset("1h2m3s") == 3723.0
    for junk in ("", "5", "s", "-1s", "1x", "1s2", "1e3s"):
        assert parse_reset(junk) is None, repr(junk)
    assert retry_delay(0, {"retry-after-ms": "1500", "retry-after": "9"}, 429) == 1.5
    assert retry_delay(0, {"retry-after": "9"}, 503) == 9.0
    spent = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "45s",
    }
    assert retry_delay(0, spent, 429) == 45.0, "the longer of two spent budgets"
    room = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "2s"}
    assert 0.25 <= retry_delay(0, room, 429) <= 0.5, "a budget with room says nothing"
    assert 0.25 <= retry_delay(0, spent, 503) <= 0.5, "only a 429 reads the budgets"


def test_connection_errors_and_settings(monkeypatch, stack):
    from conftest import free_port

    with pytest.raises(obb.APIConnectionError):
        obb.Client(base_url=f"http://127.0.0.1:{free_port()}", api_key="k", max_retries=1).jobs.get("x")
    import socket

    # A loopback listener that accepts connections but never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    with pytest.raises(obb.APITimeoutError):
        obb.Client(base_url=f"http://127.0.0.1:{silent.getsockname()[1]}", api_key="k", max_retries=1, timeout=0.2).jobs.get("x")
    silent.close()
    monkeypatch.setenv("OBB_BASE_URL", stack.base_url)
    monkeypatch.setenv("OBB_API_KEY", stack.user)
    assert obb.Client().jobs.poll([])  == []
    monkeypatch.delenv("OBB_API_KEY")
    with pytest.raises(obb.OpenBeepBoopError, match="OBB_API_KEY"):
        obb.Client()


def test_objects_read_as_attributes_and_helpers_behave():
    job = obb.Job({"id": "j", "status": "failed", "result": None, "error": {"message": "m"}, "nested": [{"a": 1}]})
    assert job.nested[0].a == 1 and job.error.message == "m" and not job.is_completed
    with pytest.raises(AttributeError):
        job.missing
    assert retry_delay(0, {"retry-after": "90"}) == 60.0
    assert 0 < retry_delay(2, {"retry-after": "soon"}) <= 2.0
    stream = io.StringIO()
    bar = Progress(2, True, stream)
    bar.update(1)
    bar.update(2)
    assert stream.getvalue().endswith("2/2 jobs\n")
