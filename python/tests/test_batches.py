import io
import json

import pytest

import openbeepboop as obb
from openbeepboop._protocol import Batch, BatchProgress, batch_input, batch_results, batch_wait_step

CHAT = "/v1/chat/completions"


def ask(text, model="echo"):
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@pytest.fixture
def client(stack):
    with obb.Client(base_url=stack.base_url, api_key=stack.user) as client:
        yield client


def test_run_takes_a_list_and_returns_the_results_by_custom_id_in_order(client, capsys):
    results = client.batches.run(
        [ask("zero"), ask("one"), ("mine", ask("pair")), {"custom_id": "own", **ask("field")},
         {"custom_id": "line", "body": ask("whole")}],
        poll_interval=0.1, timeout=60,
    )
    assert list(results) == ["request-0", "request-1", "mine", "own", "line"]
    assert results["line"].choices[0].message.content == "echo: whole"
    assert results["request-1"].choices[0].message.content == "echo: one"
    assert results["mine"].choices[0].message.content == "echo: pair"
    assert results["own"].choices[0].message.content == "echo: field"
    err = capsys.readouterr().err
    assert "5/5 requests (completed)" in err and err.endswith("\n")


def test_run_takes_a_jsonl_path_and_the_steps_work_alone(client, tmp_path):
    path = tmp_path / "input.jsonl"
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": CHAT, "body": ask(f"line {i}")} for i in (2, 1)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    results = client.batches.run(path, metadata={"run": "py"}, poll_interval=0.1, timeout=60, progress=False)
    assert list(results) == ["c2", "c1"]
    assert results["c1"].choices[0].message.content == "echo: line 1"

    batch = next(client.batches.list(page_size=1))
    assert batch.metadata == {"run": "py"} and batch.status == "completed"
    assert batch.request_counts.completed == 2 and batch.is_finished
    assert client.batches.retrieve(batch.id).id == batch.id
    assert len(list(client.batches.list(page_size=1))) >= 2, "pages are followed"
    assert client.batches.results(batch).keys() == {"c1", "c2"}

    upload = client.files.retrieve(batch.input_file_id)
    assert upload.filename == "input.jsonl" and upload.purpose == "batch"
    assert client.files.content(upload.id) == path.read_bytes()
    output = client.files.content(batch.output_file_id).decode().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in output) == ["c1", "c2"]


def test_failed_lines_are_returned_as_errors_and_progress_sees_the_counts_move(client, stack):
    seen = []

    def progress(batch):
        counts = batch.request_counts
        seen.append((batch.status, counts.completed, counts.failed))
        if batch.status == "in_progress" and (counts.completed, counts.failed) == (2, 0):
            # The echo lines are done; fail the other two as a node would.
            job, submit = stack.act_as_node("fails-in-batch")
            submit({"status": "FAILED", "upstream_status": 400, "retryable": False,
                    "error": {"message": "bad prompt", "type": "invalid_request_error",
                              "param": None, "code": "bad_prompt"}})
            job, submit = stack.act_as_node("fails-in-batch")
            submit({"status": "FAILED", "retryable": False,
                    "error": {"message": "the upstream hung up", "type": "server_error",
                              "param": None, "code": "upstream_error"}})

    results = client.batches.run(
        [("a", ask("a")), ("x", ask("x", "fails-in-batch")), ("b", ask("b")), ("y", ask("y", "fails-in-batch"))],
        poll_interval=0.05, timeout=60, progress=progress,
    )
    assert results["a"].choices[0].message.content == "echo: a"
    failures = [results["x"], results["y"]]
    assert all(isinstance(f, obb.BatchLineError) for f in failures)
    refused = next(f for f in failures if f.status_code == 400)
    assert refused.code == "bad_prompt" and "bad prompt" in str(refused)
    assert refused.body.error.message == "bad prompt" and refused.line.response.status_code == 400
    hung_up = next(f for f in failures if f.status_code is None)
    assert hung_up.code == "upstream_error" and "the upstream hung up" in hung_up.message
    assert "BatchLineError" in repr(hung_up)

    assert ("in_progress", 2, 0) in seen and seen[-1] == ("completed", 2, 2)
    done = [completed + failed for _, completed, failed in seen]
    assert done == sorted(done), "the counts only move forward"


def test_a_bad_input_file_fails_the_batch_and_bad_lists_are_refused(client, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"custom_id": "ok", "method": "POST", "url": CHAT, "body": ask("ok")}) + "\n"
        + "not json\n"
        + json.dumps({"custom_id": "elsewhere", "method": "POST", "url": "/v1/embeddings", "body": {}}) + "\n"
    )
    with pytest.raises(obb.BatchFailedError, match="line 2") as failed:
        client.batches.run(path, poll_interval=0.1, timeout=60, progress=False)
    assert [error["line"] for error in failed.value.errors] == [2, 3]
    assert failed.value.batch.status == "failed"

    with pytest.raises(ValueError, match="`twice` is used twice"):
        client.batches.run([("twice", ask("a")), ("twice", ask("b"))])
    with pytest.raises(ValueError, match="at least one"):
        client.batches.run([])
    with pytest.raises(TypeError, match="request 0"):
        client.batches.run(["just a string"])
    with pytest.raises(obb.BadRequestError, match="window"):
        client.batches.run([ask("a")], completion_window="1y")


def test_a_timeout_leaves_the_batch_running_and_a_cancel_ends_its_lines(client):
    with pytest.raises(obb.BatchTimeoutError, match="still") as late:
        client.batches.run([ask("wait", "nobody-serves")] * 2, poll_interval=0.05, timeout=0.3, progress=False)
    batch_id = late.value.batch.id
    assert client.batches.cancel(batch_id).status in ("cancelling", "cancelled")
    batch = client.batches.wait(batch_id, poll_interval=0.05, timeout=30)
    assert batch.status == "cancelled"
    results = client.batches.results(batch)
    assert {r.code for r in results.values()} == {"batch_cancelled"}


def test_files_upload_paths_bytes_and_open_files(client, tmp_path):
    path = tmp_path / "some.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    from_path = client.files.create(path)
    assert from_path.filename == "some.jsonl" and from_path.bytes == 9
    with open(path, "rb") as handle:
        assert client.files.create(handle).filename == "some.jsonl"
    from_bytes = client.files.create(b'{"b": 2}\n', filename="b.jsonl", idempotency_key="py-files-1")
    assert client.files.create(b'{"b": 2}\n', filename="b.jsonl", idempotency_key="py-files-1").id == from_bytes.id
    assert client.files.content(from_bytes.id) == b'{"b": 2}\n'
    assert client.files.delete(from_bytes.id).deleted is True
    with pytest.raises(obb.NotFoundError):
        client.files.retrieve(from_bytes.id)


def test_an_upload_is_resent_whole_after_a_retry(scripted, tmp_path):
    base, server = scripted
    server.script = [(503, {"retry-after": "0"}), (200, {})]
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"x" * 1000 + b"\n")
    with obb.Client(base_url=base, api_key="k", max_retries=1) as client:
        client.files.create(path)
    sizes = [int(headers["Content-Length"]) for _, _, headers, _ in server.seen]
    assert len(sizes) == 2 and sizes[0] == sizes[1] > 1000
    keys = {headers["Idempotency-Key"] for _, _, headers, _ in server.seen}
    assert len(keys) == 1, "a retry reuses the upload's Idempotency-Key"


def test_the_progress_bar_and_results_by_themselves():
    out = io.StringIO()
    bar = BatchProgress(True, stream=out)
    counts = lambda c, f, t: {"completed": c, "failed": f, "total": t}  # noqa: E731
    bar(Batch(status="validating", request_counts=counts(0, 0, 0)))
    bar(Batch(status="in_progress", request_counts=counts(1, 1, 4)))
    bar(Batch(status="in_progress", request_counts=counts(1, 1, 4)))
    bar(Batch(status="completed", request_counts=counts(3, 1, 4)))
    text = out.getvalue()
    assert text.count("2/4 requests, 1 failed (in_progress)") == 1, "an unchanged line is not redrawn"
    final = "\r[" + "#" * 30 + "] 4/4 requests, 1 failed (completed)"
    assert text.endswith(final + "  \n"), "padded over the longer line before"
    assert BatchProgress(False)(Batch(status="completed")) is None
    assert batch_wait_step(Batch(status="in_progress"), None, None, 0.5) == 0.5, "no deadline"
    assert batch_wait_step(Batch(status="expired"), None, None, 0.5) is None

    content, name, ids = batch_input([ask("a")], CHAT)
    assert name == "requests.jsonl" and ids == ["request-0"]
    assert json.loads(content) == {"custom_id": "request-0", "method": "POST", "url": CHAT, "body": ask("a")}
    line = b'{"custom_id":"extra","response":{"status_code":200,"body":{}},"error":null}\n'
    results = batch_results(Batch(id="batch_x", status="expired"), [line], ["gone"])
    assert list(results) == ["gone", "extra"] and results["extra"] == {}
    assert results["gone"].code == "missing_result"
    many = Batch(id="b", status="failed", errors={"data": [{"line": n, "message": "bad"} for n in range(5)]})
    with pytest.raises(obb.BatchFailedError, match=r"and 2 more"):
        batch_results(many, [], None)


async def test_the_async_client_runs_batches_the_same_way(stack, tmp_path):
    async with obb.AsyncClient(base_url=stack.base_url, api_key=stack.user) as client:
        seen = []

        async def progress(batch):
            seen.append(batch.request_counts.completed)

        results = await client.batches.run(
            [ask("one"), ("two", ask("two"))], poll_interval=0.05, timeout=60, progress=progress
        )
        assert list(results) == ["request-0", "two"]
        assert results["two"].choices[0].message.content == "echo: two"
        assert seen and seen[-1] == 2

        path = tmp_path / "async.jsonl"
        path.write_text(json.dumps({"custom_id": "p", "method": "POST", "url": CHAT, "body": ask("path")}) + "\n")
        plain = []
        results = await client.batches.run(path, poll_interval=0.05, timeout=60, progress=plain.append)
        assert results["p"].choices[0].message.content == "echo: path"
        assert plain[-1].status == "completed"

        listed = [batch async for batch in client.batches.list(page_size=1)]
        assert len(listed) >= 2 and listed[0].id == plain[-1].id
        assert (await client.batches.retrieve(listed[0].id)).is_finished
        upload = await client.files.retrieve(listed[0].input_file_id)
        assert await client.files.content(upload.id) == path.read_bytes()
        with open(path, "rb") as handle:
            again = await client.files.create(handle, idempotency_key="py-async-file")
        assert again.filename == "async.jsonl"
        assert (await client.files.delete(again.id)).deleted is True

        with pytest.raises(obb.BatchTimeoutError) as late:
            await client.batches.run([ask("late", "nobody-serves")], poll_interval=0.05, timeout=0.2)
        await client.batches.cancel(late.value.batch.id)
        batch = await client.batches.wait(late.value.batch.id, poll_interval=0.05, timeout=30, progress=True)
        assert batch.status == "cancelled"
        results = await client.batches.results(batch)
        assert isinstance(results["request-0"], obb.BatchLineError)
