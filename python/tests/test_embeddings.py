"""`client.embeddings.create`, sync and async, against a real gateway and node whose upstream
is the mock of conftest.py."""
import pytest

import openbeepboop as obb
from conftest import mock_embedding


@pytest.fixture
def client(upstream_stack):
    with obb.Client(base_url=upstream_stack.base_url, api_key=upstream_stack.user) as client:
        yield client


def upstream_bodies(stack, text):
    """The bodies of the embeddings calls whose input held `text`."""
    return [
        body for path, body in stack.mock.calls
        if path == "/v1/embeddings" and text in (body["input"] if isinstance(body["input"], list) else [body["input"]])
    ]


def test_create_returns_a_queued_embedding_job_and_get_returns_its_vector(client):
    handle = client.embeddings.create(model="m", input="the quick brown fox")
    assert handle.id.startswith("job-") and handle.status == "queued"
    assert (handle.job.object, handle.job.endpoint) == ("embedding.job", "/v1/embeddings")
    result = handle.get(timeout=30)
    assert result.object == "list"
    assert [(item.index, item.embedding) for item in result.data] == [(0, mock_embedding("the quick brown fox"))]
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (4, 4)
    assert handle.status == "completed" and client.jobs.get(handle.id).result == result


def test_each_input_of_a_list_gets_its_vector_in_order_and_other_fields_reach_the_upstream(client, upstream_stack):
    texts = ["first text here", "second", "third one"]
    handle = client.embeddings.create(model="m", input=texts, encoding_format="float", user="py-tester")
    result = handle.get(timeout=30)
    assert [item.embedding for item in result.data] == [mock_embedding(text) for text in texts]
    assert [item.index for item in result.data] == [0, 1, 2]
    [body] = upstream_bodies(upstream_stack, "first text here")
    assert (body["encoding_format"], body["user"]) == ("float", "py-tester")

    tokens = client.embeddings.create(model="m", input=[[5, 6, 7], [8]]).get(timeout=30)
    assert [item.embedding for item in tokens.data] == [[3.0, 18.0, 5.0], [1.0, 8.0, 8.0]]


def test_priority_ttl_and_idempotency_key_are_the_jobs_terms(client):
    first = client.embeddings.create(model="m", input="kept once", priority=1, ttl=600, idempotency_key="py-embed-1")
    again = client.embeddings.create(model="m", input="kept once", priority=1, ttl=600, idempotency_key="py-embed-1")
    assert again.id == first.id, "the same key returns the same job"
    assert first.job.priority == 1
    assert first.job.expires_at - first.job.created_at == 600
    assert first.get(timeout=30).data[0].embedding == mock_embedding("kept once")


def test_an_input_the_gateway_refuses_raises_bad_request_naming_the_item(client):
    with pytest.raises(obb.BadRequestError) as caught:
        client.embeddings.create(model="m", input=["fine", ""])
    assert caught.value.status_code == 400
    assert caught.value.body["error"]["param"] == "input[1]"


async def test_the_async_client_creates_embeddings_jobs_too(upstream_stack):
    async with obb.AsyncClient(base_url=upstream_stack.base_url, api_key=upstream_stack.user) as client:
        handles = [await client.embeddings.create(model="m", input=f"async text {n}", priority=2) for n in range(3)]
        assert all(handle.status == "queued" and handle.id.startswith("job-") for handle in handles)
        jobs = await client.jobs.wait_all(handles, timeout=60)
        assert [job.result.data[0].embedding for job in jobs] == [mock_embedding(f"async text {n}") for n in range(3)]
        assert (await handles[0].get(timeout=30)).usage.prompt_tokens == 3
