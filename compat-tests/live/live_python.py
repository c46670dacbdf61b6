"""The compat catalogue through the official OpenAI Python SDK against a real gateway and node.
For each call it asserts what the SDK hands the caller. Run by compat-tests (tests/compat/live.rs)
with OBB_BASE_URL, OBB_USER_KEY, OBB_NODE_KEY, OBB_FAULT_429_URL, OBB_FAULT_503_URL and OBB_JOB_ID."""
import json
import os

import openai
from openai import OpenAI

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

chunks = list(chat(stream=True))
assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "mock: Hello!"

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
assert "".join(c.choices[0].delta.content or "" for c in unwaited if c.choices) == "mock: Hello!"
job = waited.get(f"/jobs/{env['OBB_JOB_ID']}", cast_to=object)
assert job["status"] == "completed"
raises(lambda: waited.post(f"/jobs/{env['OBB_JOB_ID']}/cancel", cast_to=object), openai.ConflictError, 409)
polled = waited.post("/results/poll", body={"ids": [env["OBB_JOB_ID"]]}, cast_to=object)
assert polled["jobs"][0]["status"] == "completed"

bad = raises(lambda: OpenAI(base_url=base, api_key="sk-obb-bad", max_retries=0).models.list(),
             openai.AuthenticationError, 401)
assert bad.body["code"] == "invalid_api_key"
raises(lambda: OpenAI(base_url=base, api_key=env["OBB_NODE_KEY"], max_retries=0).chat.completions.create(
    model=MODEL, messages=HI), openai.PermissionDeniedError, 403)
print("python live catalogue passed with openai", openai.__version__)
