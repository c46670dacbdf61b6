"""The compat catalogue through the official OpenAI Python SDK against a real gateway and node.
For each call it asserts what the SDK hands the caller. Run by compat-tests (tests/compat/live.rs)
with OBB_BASE_URL, OBB_USER_KEY, OBB_NODE_KEY, OBB_FAULT_429_URL, OBB_FAULT_503_URL and OBB_JOB_ID."""
import json
import os
import time

import openai
from openai import OpenAI
from openai.types.chat import ChatCompletion

env = os.environ
MODEL = "gpt-4o-mini"
SLASHED = "org/llama3.1:8b"  # the node serves it too: an id with `/` and `:`
HI = [{"role": "user", "content": "Hello!"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]
base = f"{env['OBB_BASE_URL']}/v1"
waited = OpenAI(base_url=base, api_key=env["OBB_USER_KEY"], default_query={"wait": 30})
prefer = OpenAI(base_url=base, api_key=env["OBB_USER_KEY"], default_headers={"Prefer": "wait=30"})
chat = lambda **extra: waited.chat.completions.create(**{"model": MODEL, "messages": HI, **extra})  # noqa: E731


def until(call, done, deadline_seconds=60):
    """Calls `call` until `done(result)`, as an SDK user polls, failing past the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while not done(result := call()):
        assert time.monotonic() < deadline, f"still {result}"
        time.sleep(0.05)
    return result


def raises(call, cls, status):
    """Runs `call` and returns the exception, which must be a `cls` with `status`."""
    try:
        call()
    except cls as error:
        assert error.status_code == status, error
        return error
    raise AssertionError(f"expected {cls.__name__}")


assert chat().choices[0].message.content == "mock: Hello!"
turns = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And again?"}]
assert chat(messages=turns).choices[0].message.content == "mock: And again?"

called = chat(messages=[{"role": "user", "content": "What is a queue?"}], tools=TOOLS,
              tool_choice={"type": "function", "function": {"name": "lookup"}})
call = called.choices[0].message.tool_calls[0]
assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
assert json.loads(call.function.arguments) == {"query": "What is a queue?"}
followup = chat(tools=TOOLS, messages=[
    {"role": "user", "content": "What is a queue?"},
    called.choices[0].message.model_dump(exclude_none=True),
    {"role": "tool", "tool_call_id": call.id, "content": "a line of waiting things"}])
assert "a line of waiting things" in followup.choices[0].message.content

schema = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"], "additionalProperties": False}}}
assert json.loads(chat(response_format=schema).choices[0].message.content)["answer"] == "mock: Hello!"
assert len(chat(n=2).choices) == 2
sampled = chat(seed=42, temperature=0.3, max_completion_tokens=64)
assert sampled.usage.total_tokens == sampled.usage.prompt_tokens + sampled.usage.completion_tokens

# A stream is the upstream's own, relayed live: the mock streams `t0 t1 t2 `.
STREAMED = "t0 t1 t2 "
chunks = list(chat(stream=True))
assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == STREAMED

assert prefer.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content == "mock: Hello!"
first = chat(extra_headers={"Idempotency-Key": "live-python-key"})
again = chat(extra_headers={"Idempotency-Key": "live-python-key"})
assert first.id == again.id, "the same key returns the same job's completion"

for fault in ("OBB_FAULT_429_URL", "OBB_FAULT_503_URL"):
    retrying = OpenAI(base_url=f"{env[fault]}/v1", api_key=env["OBB_USER_KEY"], default_query={"wait": 30}, max_retries=2)
    assert retrying.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content == "mock: Hello!"
    cls = openai.RateLimitError if "429" in fault else openai.InternalServerError
    raises(lambda: OpenAI(base_url=f"{env[fault]}/v1", api_key=env["OBB_USER_KEY"], max_retries=0).models.list(),
           cls, 429 if "429" in fault else 503)

assert sorted(m.id for m in waited.models.list()) == sorted([MODEL, SLASHED])
assert waited.models.retrieve(MODEL).id == MODEL
assert waited.models.retrieve(SLASHED).id == SLASHED
missing = raises(lambda: waited.models.retrieve("no-such-model"), openai.NotFoundError, 404)
assert missing.body["code"] == "model_not_found"
# A stream asked for without any wait is still answered as a stream, never as a JSON 202.
plain = OpenAI(base_url=base, api_key=env["OBB_USER_KEY"])
unwaited = plain.chat.completions.create(model=MODEL, messages=HI, stream=True)
assert "".join(c.choices[0].delta.content or "" for c in unwaited if c.choices) == STREAMED
job = waited.get(f"/jobs/{env['OBB_JOB_ID']}", cast_to=object)
assert job["status"] == "completed"
raises(lambda: waited.post(f"/jobs/{env['OBB_JOB_ID']}/cancel", cast_to=object), openai.ConflictError, 409)
polled = waited.post("/results/poll", body={"ids": [env["OBB_JOB_ID"]]}, cast_to=object)
assert polled["jobs"][0]["status"] == "completed"

# The Batch API, end to end: upload, create, poll until completed, list, the output file read
# line by line, a cancel, a delete, and an unknown input file.
LINES = "".join(json.dumps({"custom_id": f"live-{i}", "method": "POST", "url": "/v1/chat/completions",
                            "body": {"model": model, "messages": [{"role": "user", "content": f"Line {i}"}]}}) + "\n"
                for i, model in enumerate([MODEL, MODEL, MODEL])).encode()
uploaded = plain.files.create(file=("input.jsonl", LINES, "application/jsonl"), purpose="batch")
assert uploaded.id.startswith("file-")
assert (uploaded.object, uploaded.purpose, uploaded.filename, uploaded.bytes) == ("file", "batch", "input.jsonl", len(LINES))
assert plain.files.retrieve(uploaded.id) == uploaded
assert uploaded.id in [f.id for f in plain.files.list(purpose="batch")]
batch = plain.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                             metadata={"run": "live-python"})
assert batch.id.startswith("batch_") and batch.status == "validating"
assert (batch.input_file_id, batch.endpoint, batch.metadata) == (uploaded.id, "/v1/chat/completions", {"run": "live-python"})
done = until(lambda: plain.batches.retrieve(batch.id), lambda b: b.status not in ("validating", "in_progress", "finalizing"))
assert done.status == "completed", done
assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 3, 0)
assert done.completed_at is not None and done.error_file_id is None
assert batch.id in [b.id for b in plain.batches.list(limit=1)]  # iterating pages on through `after`
output = {line["custom_id"]: line for line in map(json.loads, plain.files.content(done.output_file_id).text.splitlines())}
assert sorted(output) == ["live-0", "live-1", "live-2"]
for custom_id, line in output.items():
    assert line["response"]["status_code"] == 200 and line["error"] is None
    completion = ChatCompletion.model_validate(line["response"]["body"])
    assert completion.choices[0].message.content == f"mock: Line {custom_id.removeprefix('live-')}"
output_file = plain.files.retrieve(done.output_file_id)
assert (output_file.purpose, output_file.bytes) == ("batch_output", len(plain.files.content(done.output_file_id).content))

# A model no node serves: the second batch waits in_progress until it is cancelled.
stuck = plain.files.create(file=("stuck.jsonl", LINES.replace(MODEL.encode(), b"live-unserved"), "application/jsonl"),
                           purpose="batch")
second = plain.batches.create(input_file_id=stuck.id, endpoint="/v1/chat/completions", completion_window="24h")
until(lambda: plain.batches.retrieve(second.id), lambda b: b.status == "in_progress")
cancelling = plain.batches.cancel(second.id)
assert cancelling.id == second.id and cancelling.status in ("cancelling", "cancelled"), cancelling
cancelled = until(lambda: plain.batches.retrieve(second.id), lambda b: b.status != "cancelling")
assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None, cancelled
listed = [b.id for b in plain.batches.list()]
assert listed.index(second.id) < listed.index(batch.id), "newest first"

deleted = plain.files.delete(uploaded.id)
assert (deleted.id, deleted.object, deleted.deleted) == (uploaded.id, "file", True)
raises(lambda: plain.files.retrieve(uploaded.id), openai.NotFoundError, 404)
unknown = raises(lambda: plain.batches.create(input_file_id="file-unknown", endpoint="/v1/chat/completions",
                                              completion_window="24h"), openai.BadRequestError, 400)
assert unknown.param == "input_file_id", unknown.body

# The Responses API: a background response polled until completed, its input items, its
# delete; one answered at once and a follow-up through previous_response_id; a cancel; the
# event stream, raw and through the SDK's stream helper.
queued = plain.responses.create(model=MODEL, input="Hello!", background=True)
assert queued.id.startswith("resp_") and (queued.object, queued.status, queued.background) == ("response", "queued", True)
assert queued.output_text == "", queued
done = until(lambda: plain.responses.retrieve(queued.id), lambda r: r.status in ("completed", "incomplete", "failed"))
assert (done.id, done.status, done.output_text) == (queued.id, "completed", "mock: Hello!"), done
assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens > 0, done.usage
given = list(plain.responses.input_items.list(queued.id))
assert [(i.type, i.role, [c.text for c in i.content]) for i in given] == [("message", "user", ["Hello!"])], given
assert plain.responses.delete(queued.id) is None
raises(lambda: plain.responses.retrieve(queued.id), openai.NotFoundError, 404)

answered = plain.responses.create(model=MODEL, input="Hello!")
assert (answered.status, answered.output_text, answered.background) == ("completed", "mock: Hello!", False), answered
assert answered.output[0].type == "message" and answered.output[0].role == "assistant"
again = plain.responses.create(model=MODEL, input="And again?", previous_response_id=answered.id)
assert (again.status, again.output_text, again.previous_response_id) == ("completed", "mock: And again?", answered.id)
turns = [(i.role, [c.text for c in i.content]) for i in plain.responses.input_items.list(again.id, order="asc")]
assert turns == [("user", ["Hello!"]), ("assistant", ["mock: Hello!"]), ("user", ["And again?"])], turns

# A model no node serves: the response stays queued until it is cancelled. Cancelling again
# answers the cancelled response (idempotent, as OpenAI's); a completed one is a conflict.
waiting = plain.responses.create(model="live-unserved", input="Hello!", background=True)
cancelled = plain.responses.cancel(waiting.id)
assert (cancelled.id, cancelled.status, cancelled.output_text) == (waiting.id, "cancelled", ""), cancelled
assert plain.responses.retrieve(waiting.id).status == "cancelled"
assert plain.responses.cancel(waiting.id).status == "cancelled"
raises(lambda: plain.responses.cancel(answered.id), openai.ConflictError, 409)

events = list(plain.responses.create(model=MODEL, input="Hello!", stream=True))
kinds = [event.type for event in events]
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
assert [event.sequence_number for event in events] == list(range(len(events)))
# Relayed live from the mock's own stream (`t{i} ` per delta).
assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "t0 t1 t2 ", events
assert events[-1].response.output_text == "t0 t1 t2 " and events[-1].response.status == "completed"
# A background response's stream, asked for right after it is created: held, if the node has
# not answered it yet, until it has.
later = plain.responses.create(model=MODEL, input="Hello!", background=True)
resumed = list(plain.responses.retrieve(later.id, stream=True))
assert [resumed[0].type, resumed[-1].type] == ["response.created", "response.completed"], resumed
assert resumed[-1].response.id == later.id and resumed[-1].response.output_text == "mock: Hello!"
assert "".join(e.delta for e in resumed if e.type == "response.output_text.delta") == "mock: Hello!"
with plain.responses.stream(model=MODEL, input="Hello!") as stream:
    deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    final = stream.get_final_response()
assert deltas == final.output_text == "t0 t1 t2 ", final

# Embeddings through `wait`: the SDK asks for base64 unless told otherwise and hands the
# caller floats either way; the mock's vector is (bytes, their sum, the first byte).
def mock_embedding(text):
    data = text.encode()
    return [float(len(data)), float(sum(data)), float(data[0])]


vectors = plain.embeddings.create(model=MODEL, input=["Hello!", "a queue"], extra_query={"wait": 30})
assert vectors.object == "list" and [e.index for e in vectors.data] == [0, 1]
assert [e.embedding for e in vectors.data] == [mock_embedding("Hello!"), mock_embedding("a queue")], vectors
floats = waited.embeddings.create(model=MODEL, input="Hello!", encoding_format="float")
assert floats.data[0].embedding == mock_embedding("Hello!") and floats.usage.total_tokens > 0

# Legacy completions through `wait`, and streamed (without any wait): the upstream's chunks, relayed live.
completed = waited.completions.create(model=MODEL, prompt="Say this is a test", max_tokens=16, temperature=0)
assert completed.object == "text_completion" and completed.choices[0].finish_reason == "stop"
assert completed.choices[0].text == "mock: Say this is a test", completed
pieces = list(plain.completions.create(model=MODEL, prompt="Say this is a test", stream=True))
assert pieces and all(piece.object == "text_completion" for piece in pieces)
assert "".join(p.choices[0].text for p in pieces if p.choices) == STREAMED

bad = raises(lambda: OpenAI(base_url=base, api_key="sk-obb-bad", max_retries=0).models.list(),
             openai.AuthenticationError, 401)
assert bad.body["code"] == "invalid_api_key"
raises(lambda: OpenAI(base_url=base, api_key=env["OBB_NODE_KEY"], max_retries=0).chat.completions.create(
    model=MODEL, messages=HI), openai.PermissionDeniedError, 403)
print("python live catalogue passed with openai", openai.__version__)
