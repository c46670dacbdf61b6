import pytest

import openbeepboop as obb

HELLO = [{"role": "user", "content": "Hello!"}]


async def test_the_async_client_has_the_same_methods(stack):
    async with obb.AsyncClient(base_url=stack.base_url, api_key=stack.user) as client:
        handle = await client.chat.completions.create(model="echo", messages=HELLO)
        assert handle.status == "queued"
        result = await handle.get(timeout=30)
        assert result.choices[0].message.content == "echo: Hello!"
        assert handle.id == (await client.jobs.get(handle.id)).id

        many = await client.chat.completions.create_many(
            [{"model": "echo", "messages": [{"role": "user", "content": str(i)}]} for i in range(3)],
            batch_id="async-batch",
        )
        again = await client.chat.completions.create_many(
            [{"model": "echo", "messages": [{"role": "user", "content": str(i)}]} for i in range(3)],
            batch_id="async-batch",
        )
        assert [h.id for h in many] == [h.id for h in again]
        jobs = await client.jobs.wait_all(many, timeout=60, progress=True)
        assert [j.result.choices[0].message.content for j in jobs] == ["echo: 0", "echo: 1", "echo: 2"]
        polled = await client.jobs.poll([many[0].id, "job-nope"])
        assert polled[0].is_completed and polled[1].status == "not_found"
        listed = [job async for job in client.jobs.list(page_size=2)]
        assert len(listed) >= 4

        stuck = await client.chat.completions.create(model="nobody-serves", messages=HELLO, ttl=60, priority=5)
        assert await stuck.get(wait=False) is None
        with pytest.raises(obb.JobTimeoutError):
            await stuck.get(timeout=0.3)
        with pytest.raises(obb.JobTimeoutError):
            await client.jobs.wait_all([stuck], timeout=0.3)
        await stuck.cancel()
        with pytest.raises(obb.JobCancelledError):
            await stuck.get()
        with pytest.raises(obb.NotFoundError):
            await client.jobs.get("job-unknown")


async def test_async_errors_and_retries(stack, scripted):
    with pytest.raises(obb.AuthenticationError):
        await obb.AsyncClient(base_url=stack.base_url, api_key="sk-obb-x").jobs.get("job-x")
    base, server = scripted
    server.script = [(503, {"retry-after": "0"}), (200, {})]
    client = obb.AsyncClient(base_url=base, api_key="k", max_retries=2)
    assert (await client.chat.completions.create(model="m", messages=HELLO)).id == "job-x"
    server.script = [(429, {"retry-after": "0"})] * 2
    with pytest.raises(obb.RateLimitError):
        await obb.AsyncClient(base_url=base, api_key="k", max_retries=1).jobs.get("x")
    from test_sync import future_http_date

    # An HTTP-date at least 1 s ahead; the first backoff without one is at most 0.5 s.
    date, not_before = future_http_date(2)
    server.script = [(429, {"retry-after": date}), (200, {})]
    server.seen.clear()
    assert (await client.jobs.get("job-x")).id == "job-x"
    assert len(server.seen) == 2 and server.seen[1][3] >= not_before - 0.01
    from conftest import free_port

    with pytest.raises(obb.APIConnectionError):
        await obb.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}", api_key="k", max_retries=1).jobs.get("x")
    await client.close()
