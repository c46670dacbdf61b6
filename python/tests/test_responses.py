"""`client.responses.create`, sync and async, against a real gateway and node whose upstream
is the mock of conftest.py: a background response is a job whose id is the response's."""
import pytest

import openbeepboop as obb
from openbeepboop._protocol import response_job, responses_request


@pytest.fixture
def client(upstream_stack):
    with obb.Client(base_url=upstream_stack.base_url, api_key=upstream_stack.user) as client:
        yield client


def test_create_returns_the_queued_response_as_a_job_and_get_returns_the_finished_response(client):
    handle = client.responses.create(model="m", input="Hello, responses")
    assert handle.id.startswith("resp_") and handle.status == "queued"
    assert (handle.job.response.id, handle.job.response.status) == (handle.id, "queued")
    assert handle.job.response.object == "response"
    result = handle.get(timeout=30)
    assert (result.object, result.status) == ("response", "completed")
    assert result.output[0].content[0].text == result.output_text == "mock: Hello, responses"
    assert isinstance(result, obb.Response)
    assert result.usage.total_tokens == 5
    assert handle.status == "completed"
    job = client.jobs.get(handle.id)
    assert (job.id, job.endpoint, job.status) == (handle.id, "/v1/responses", "completed")
    assert job.result == result


def test_input_items_and_other_fields_reach_the_upstream_but_not_stream(client, upstream_stack):
    items = [{"role": "user", "content": "Items"}, {"role": "user", "content": [{"type": "input_text", "text": "too"}]}]
    handle = client.responses.create(
        model="m", input=items, instructions="Be brief.", max_output_tokens=20, stream=True, priority=1, ttl=300,
    )
    assert handle.status == "queued"
    assert handle.get(timeout=30).output[0].content[0].text == "mock: Items too"
    [body] = [body for path, body in upstream_stack.mock.calls if path == "/v1/responses" and body["input"] == items]
    assert (body["instructions"], body["max_output_tokens"]) == ("Be brief.", 20)
    assert body.get("stream") in (None, False), "the upstream is asked for the whole answer"
    job = client.jobs.get(handle.id)
    assert job.priority == 1 and job.expires_at - job.created_at == 300


def test_a_cancelled_response_job_raises_on_get(client):
    handle = client.responses.create(model="nobody-serves", input="never run")
    assert handle.cancel().status == "cancelled"
    with pytest.raises(obb.JobCancelledError):
        handle.get(timeout=30)


def test_the_request_is_always_background_and_a_response_maps_onto_its_job():
    body, headers = responses_request("m", "hi", None, 3, None, {"background": False, "stream": True, "store": True})
    assert body == {"model": "m", "input": "hi", "store": True, "background": True}
    assert headers["Idempotency-Key"].startswith("obb-") and headers["X-OBB-Priority"] == "3"
    running = response_job({"id": "resp_1", "status": "in_progress", "model": "m", "created_at": 7})
    assert (running["id"], running["status"], running["endpoint"]) == ("resp_1", "processing", "/v1/responses")
    assert response_job({"id": "resp_2", "status": "queued"})["status"] == "queued"
    parts = [{"type": "reasoning"}, {"type": "message", "content": [
        {"type": "output_text", "text": "a"}, {"type": "refusal"}, {"type": "output_text", "text": "b"}]}]
    assert obb.Response({"output": parts}).output_text == "ab"
    assert obb.Response({"status": "failed"}).output_text == ""


async def test_the_async_client_creates_response_jobs_too(upstream_stack):
    async with obb.AsyncClient(base_url=upstream_stack.base_url, api_key=upstream_stack.user) as client:
        handle = await client.responses.create(model="m", input="async hello")
        assert handle.id.startswith("resp_") and handle.status == "queued"
        result = await handle.get(timeout=30)
        assert result.output_text == "mock: async hello"
        assert (await client.jobs.get(handle.id)).endpoint == "/v1/responses"
