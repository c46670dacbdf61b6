"""The compat catalogue, through the official OpenAI Python SDK, against the recording server.
Usage: python catalogue_python.py BASE_URL"""
import json
import sys
import urllib.request

import openai
from openai import OpenAI

base = sys.argv[1]
SDK = "python"
MODEL = "gpt-4o-mini"
USER, BAD, NODE = "sk-obb-compat-user", "sk-obb-compat-bad", "sk-obb-compat-node"
HI = [{"role": "user", "content": "Hello!"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]


def control(path, body):
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    urllib.request.urlopen(request).read()


def case(name, fail=()):
    def run(call):
        control("/__case", {"name": name, "sdk": SDK, "version": openai.__version__, "fail": list(fail)})
        try:
            call()
        except openai.APIStatusError:
            pass
        control("/__end", {})
    return run


waited = OpenAI(base_url=f"{base}/v1", api_key=USER, default_query={"wait": 30}, max_retries=2)
prefer = OpenAI(base_url=f"{base}/v1", api_key=USER, default_headers={"Prefer": "wait=30"})
plain = OpenAI(base_url=f"{base}/v1", api_key=USER)

case("plain_chat")(lambda: waited.chat.completions.create(model=MODEL, messages=HI))
case("multi_turn")(lambda: waited.chat.completions.create(model=MODEL, messages=[
    {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And again?"}]))
case("tools_call")(lambda: waited.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "What is a queue?"}], tools=TOOLS,
    tool_choice={"type": "function", "function": {"name": "lookup"}}))
case("tools_followup")(lambda: waited.chat.completions.create(model=MODEL, tools=TOOLS, messages=[
    {"role": "user", "content": "What is a queue?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": "{\"query\": \"queue\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "a line of waiting things"}]))
case("json_schema")(lambda: waited.chat.completions.create(model=MODEL, messages=HI, response_format={
    "type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"], "additionalProperties": False}}}))
case("n_two")(lambda: waited.chat.completions.create(model=MODEL, messages=HI, n=2))
case("sampling")(lambda: waited.chat.completions.create(
    model=MODEL, messages=HI, seed=42, temperature=0.3, max_completion_tokens=64))
case("stream")(lambda: list(waited.chat.completions.create(model=MODEL, messages=HI, stream=True)))
case("prefer_header")(lambda: prefer.chat.completions.create(model=MODEL, messages=HI))
case("idempotency_key")(lambda: waited.chat.completions.create(
    model=MODEL, messages=HI, extra_headers={"Idempotency-Key": f"compat-key-{SDK}"}))
case("retry_429", fail=[429])(lambda: waited.chat.completions.create(model=MODEL, messages=HI))
case("retry_503", fail=[503])(lambda: waited.chat.completions.create(model=MODEL, messages=HI))
case("models_list")(lambda: list(waited.models.list()))
case("job_get")(lambda: waited.get("/jobs/job-recorded", cast_to=object))
case("job_cancel")(lambda: waited.post("/jobs/job-recorded/cancel", cast_to=object))
case("results_poll")(lambda: waited.post("/results/poll", body={"ids": ["job-recorded"]}, cast_to=object))
LINES = "".join(json.dumps({"custom_id": f"{SDK}-{i}", "method": "POST", "url": "/v1/chat/completions",
                             "body": {"model": model, "messages": [{"role": "user", "content": f"Line {i}"}]}}) + "\n"
                 for i, model in enumerate([MODEL, MODEL]))
# A model no node serves: its batch stays in_progress until cancelled.
STUCK = LINES.replace(MODEL, "compat-unserved")


def batch_flow():
    uploaded = plain.files.create(file=("input.jsonl", LINES.encode(), "application/jsonl"), purpose="batch")
    plain.files.retrieve(uploaded.id)
    plain.files.list(purpose="batch", limit=1)
    batch = plain.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"sdk": SDK})
    done = plain.batches.retrieve(batch.id)
    plain.batches.list(limit=1)
    plain.files.content(done.output_file_id).text
    plain.files.delete(uploaded.id)


def batch_cancel():
    uploaded = plain.files.create(file=("stuck.jsonl", STUCK.encode(), "application/jsonl"), purpose="batch")
    batch = plain.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    plain.batches.retrieve(batch.id)
    plain.batches.cancel(batch.id)


case("batch_flow")(batch_flow)
case("batch_cancel")(batch_cancel)
case("batch_unknown_file")(lambda: plain.batches.create(
    input_file_id="file-unknown", endpoint="/v1/chat/completions", completion_window="24h"))


def responses_background():
    queued = plain.responses.create(model=MODEL, input="Hello!", background=True)
    plain.responses.retrieve(queued.id)
    list(plain.responses.input_items.list(queued.id))
    plain.responses.delete(queued.id)


def responses_create():
    first = plain.responses.create(model=MODEL, input="Hello!")
    plain.responses.create(model=MODEL, input="And again?", previous_response_id=first.id)


def responses_cancel():
    # A model no node serves: the response stays queued until it is cancelled.
    queued = plain.responses.create(model="compat-unserved", input="Hello!", background=True)
    plain.responses.cancel(queued.id)


case("responses_background")(responses_background)
case("responses_create")(responses_create)
case("responses_cancel")(responses_cancel)
case("responses_stream")(lambda: list(plain.responses.create(model=MODEL, input="Hello!", stream=True)))
# The SDK asks for base64 vectors unless told otherwise; `wait` makes the answer the list.
case("embeddings")(lambda: plain.embeddings.create(model=MODEL, input=["Hello!", "a queue"],
                                                   extra_query={"wait": 30}))
case("embeddings_float")(lambda: waited.embeddings.create(model=MODEL, input="Hello!", encoding_format="float"))
case("completions")(lambda: waited.completions.create(model=MODEL, prompt="Say this is a test", max_tokens=16,
                                                      temperature=0))
case("completions_stream")(lambda: list(waited.completions.create(model=MODEL, prompt="Say this is a test",
                                                                 stream=True)))
case("bad_key")(lambda: OpenAI(base_url=f"{base}/v1", api_key=BAD, max_retries=0).models.list())
case("wrong_role")(lambda: OpenAI(base_url=f"{base}/v1", api_key=NODE, max_retries=0).chat.completions.create(
    model=MODEL, messages=HI))
print("recorded the python catalogue with openai", openai.__version__)
