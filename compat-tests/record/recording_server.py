"""A small server that records what the official OpenAI SDKs send, for compat-tests.

It answers like OpenAI would (chat and legacy completions, their streams, tool calls,
embeddings, models, errors, the Files and Batch APIs' objects and pages, and the Responses
API's objects and event stream) so the SDKs carry on, and writes one fixture per case. A
multipart body is kept as its exact text (`body_text`), since its boundary is in the recorded
content type. The Files, Batch and Responses answers (but a stream) are kept too (`answer`:
status and body): replay maps the ids minted here (`file-recorded-NN`, `batch_recorded-NN`,
`resp_recorded-NN`) to the gateway's, and waits for a retrieved batch or response to reach
the status recorded here. A batch whose lines all name a model served here (`gpt-4o-mini`)
is `completed` when first retrieved; any other stays `in_progress`. A background response is
`queued` when created and, if its model is served here, `completed` when first retrieved;
one of another model stays `queued` until cancelled. Embeddings come as base64 when asked
for (the SDKs' default), as OpenAI sends them. Control endpoints, used by the catalogue
scripts between SDK calls:
    POST /__case {"name", "sdk", "version", "fail": [429, ...]}   start a case
    POST /__end                                                    write its fixture
Usage: python recording_server.py PORT FIXTURES_DIR
"""
import array
import base64
import itertools
import json
import pathlib
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qsl

KEPT_HEADERS = (
    "content-type", "accept", "prefer", "idempotency-key",
    "x-stainless-retry-count", "x-stainless-lang", "x-stainless-package-version",
)
ROLES = {"sk-obb-compat-user": "user", "sk-obb-compat-bad": "bad", "sk-obb-compat-node": "node"}
JOB = {"id": "job-recorded", "object": "chat.completion.job", "model": "gpt-4o-mini", "status": "completed",
       "priority": 3, "created_at": 1700000000, "updated_at": 1700000000, "expires_at": 1700086400, "attempts": 1}

SERVED = {"gpt-4o-mini"}
TIME = 1700000000

state = {"case": None, "requests": [], "fail": []}
files, batches = {}, {}  # id -> (object, content) and id -> batch object, in creation order
responses = {}  # id -> (response object, its request with the conversation so far)
minted = itertools.count(1)


def error(status, message, code, param=None, kind="invalid_request_error"):
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def multipart(content_type, raw):
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    fields = {}
    for part in raw.split(b"--" + boundary)[1:-1]:
        head, _, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = next(line for line in head.decode().split("\r\n")
                           if line.lower().startswith("content-disposition"))
        params = dict(p.strip().split("=", 1) for p in disposition.split(";")[1:])
        fields[params["name"].strip('"')] = (params.get("filename", "").strip('"'), value.removesuffix(b"\r\n"))
    return fields


def store_file(filename, purpose, content):
    file = {"id": f"file-recorded-{next(minted):02d}", "object": "file", "bytes": len(content), "created_at": TIME,
            "expires_at": None, "filename": filename, "purpose": purpose, "status": "processed",
            "status_details": None}
    files[file["id"]] = (file, content)
    return file


def page(items, query):
    """OpenAI's cursor page of `items` (oldest first), newest first."""
    data = list(reversed(items))[:int(query.get("limit", 10000))]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(data) < len(items)}


def advance(batch):
    """A batch of served lines completes when first looked at, with an output file."""
    lines = [json.loads(line) for line in files[batch["input_file_id"]][1].splitlines() if line.strip()]
    batch["request_counts"]["total"] = len(lines)
    if batch["status"] != "validating":
        return batch
    batch.update(status="in_progress", in_progress_at=TIME, model=lines[0]["body"]["model"])
    if all(line["body"]["model"] in SERVED for line in lines):
        output = "".join(json.dumps({"id": f"batch_req_{i}", "custom_id": line["custom_id"], "response": {
            "status_code": 200, "request_id": f"req_{i}", "body": completion(line["body"])}, "error": None}) + "\n"
            for i, line in enumerate(lines))
        out = store_file(f"{batch['id']}_output.jsonl", "batch_output", output.encode())
        batch.update(status="completed", finalizing_at=TIME, completed_at=TIME, output_file_id=out["id"],
                     request_counts={"total": len(lines), "completed": len(lines), "failed": 0},
                     usage={"input_tokens": len(lines), "input_tokens_details": {"cached_tokens": 0},
                            "output_tokens": len(lines), "output_tokens_details": {"reasoning_tokens": 0},
                            "total_tokens": 2 * len(lines)})
    return batch


def files_and_batches(method, path, query, content_type, raw):
    """The Files and Batch APIs, as (status, answer); None for another route."""
    parts = path.strip("/").split("/")[1:]
    if parts == ["files"] and method == "POST":
        fields = multipart(content_type, raw)
        filename, content = fields["file"]
        return 200, store_file(filename, fields["purpose"][1].decode(), content)
    if parts == ["files"]:
        return 200, page([f for f, _ in files.values() if query.get("purpose") in (None, f["purpose"])], query)
    if parts[0] == "files":
        if parts[1] not in files:
            return error(404, f"file `{parts[1]}` not found", "file_not_found")
        file, content = files[parts[1]]
        if parts[2:] == ["content"]:
            return 200, content
        if method == "DELETE":
            del files[parts[1]]
            return 200, {"id": file["id"], "object": "file", "deleted": True}
        return 200, file
    if parts == ["batches"] and method == "POST":
        body = json.loads(raw)
        if body["input_file_id"] not in files:
            return error(400, f"input file `{body['input_file_id']}` not found", "invalid_request",
                         "input_file_id")
        batch = {"id": f"batch_recorded-{next(minted):02d}", "object": "batch", "endpoint": body["endpoint"],
                 "model": None, "input_file_id": body["input_file_id"],
                 "completion_window": body["completion_window"], "status": "validating", "errors": None,
                 "output_file_id": None, "error_file_id": None, "created_at": TIME, "in_progress_at": None,
                 "expires_at": TIME + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "usage": None,
                 "metadata": body.get("metadata")}
        batches[batch["id"]] = batch
        return 200, batch
    if parts == ["batches"]:
        return 200, page(list(batches.values()), query)
    if parts[0] == "batches":
        if parts[1] not in batches:
            return error(404, f"batch `{parts[1]}` not found", "batch_not_found")
        batch = advance(batches[parts[1]])
        if parts[2:] == ["cancel"]:
            batch.update(status="cancelling", cancelling_at=TIME)
        return 200, batch
    return None


def last_input_text(body):
    """The text of the last user input of a Responses request."""
    given = body.get("input")
    if isinstance(given, str):
        return given
    for item in reversed(given or []):
        if item.get("role") == "user":
            content = item.get("content")
            return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
    return ""


def response_object(rid, body, status):
    """OpenAI's `response` object for `body` in `status`; a completed one has its output."""
    done = status == "completed"
    message = {"id": f"msg_rec_{rid[-2:]}", "type": "message", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": f"recorded: {last_input_text(body)}",
                            "annotations": []}]}
    usage = {"input_tokens": 1, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 1,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 2}
    return {"id": rid, "object": "response", "created_at": TIME, "status": status,
            "background": bool(body.get("background")), "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"], "output": [message] if done else [], "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"), "store": True, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "truncation": "disabled", "usage": usage if done else None, "metadata": body.get("metadata") or {}}


def response_events(response):
    """The Responses event stream of a completed `response`, as OpenAI sends it: every event
    named in its `event:` line and its data's `type`, numbered by `sequence_number`; no [DONE]."""
    opening = dict(response, status="in_progress", output=[], usage=None)
    message = response["output"][0]
    part = message["content"][0]
    at = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    events = [
        ("response.created", {"response": opening}),
        ("response.in_progress", {"response": opening}),
        ("response.output_item.added", {"output_index": 0, "item": dict(message, status="in_progress", content=[])}),
        ("response.content_part.added", dict(at, part=dict(part, text=""))),
        ("response.output_text.delta", dict(at, delta=part["text"], logprobs=[])),
        ("response.output_text.done", dict(at, text=part["text"], logprobs=[])),
        ("response.content_part.done", dict(at, part=part)),
        ("response.output_item.done", {"output_index": 0, "item": message}),
        ("response.completed", {"response": response}),
    ]
    return "".join(f"event: {kind}\ndata: {json.dumps(dict(data, type=kind, sequence_number=n))}\n\n"
                   for n, (kind, data) in enumerate(events))


def responses_api(method, path, body):
    """The Responses API, as (status, answer); None for another route. A stream's answer is
    its events as bytes."""
    parts = path.strip("/").split("/")[1:]
    if parts == ["responses"] and method == "POST":
        rid = f"resp_recorded-{next(minted):02d}"
        request = dict(body)
        previous = responses.get(body.get("previous_response_id"))
        if body.get("previous_response_id") and not previous:
            return error(400, f"previous response `{body['previous_response_id']}` not found",
                         "previous_response_not_found", "previous_response_id")
        if body.get("background"):
            response = response_object(rid, body, "queued")
        else:
            response = response_object(rid, body, "completed")
        responses[rid] = (response, request)
        if body.get("stream"):
            return 200, response_events(response).encode()
        return 200, response
    if parts[0] != "responses":
        return None
    if parts[1] not in responses:
        return error(404, f"Response with id '{parts[1]}' not found.", None, "response_id")
    response, request = responses[parts[1]]
    if method == "DELETE":
        del responses[parts[1]]
        return 200, {"id": response["id"], "object": "response", "deleted": True}
    if parts[2:] == ["cancel"]:
        if response["status"] not in ("queued", "in_progress"):
            return error(400, "Only responses that are queued or in progress can be cancelled.", None)
        response.update(status="cancelled")
        return 200, response
    if parts[2:] == ["input_items"]:
        given = request["input"]
        items = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else given
        data = [{"id": f"msg_rec_in_{i}", "type": "message", "role": item["role"],
                 "content": [{"type": "input_text", "text": item["content"]}]
                 if isinstance(item["content"], str) else item["content"]}
                for i, item in enumerate(items)]
        return 200, {"object": "list", "data": list(reversed(data)), "first_id": data[-1]["id"],
                     "last_id": data[0]["id"], "has_more": False}
    if response["status"] == "queued" and response["model"] in SERVED:
        response.update(response_object(response["id"], request, "completed"))
    return 200, response


def embeddings(body):
    """An embeddings list with a vector per input; base64 (little-endian float32s) when asked."""
    given = body["input"]
    inputs = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else given
    data = []
    for index, text in enumerate(inputs):
        vector = [float(len(text)), 0.5, -0.25]
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(array.array("f", vector).tobytes()).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return {"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}}


def text_completion(body):
    """A legacy `text_completion`, and its stream's chunks."""
    prompt = body["prompt"] if isinstance(body["prompt"], str) else " ".join(map(str, body["prompt"]))
    done = {"id": "cmpl-rec", "object": "text_completion", "created": TIME, "model": body["model"],
            "system_fingerprint": None, "choices": [
                {"text": f"recorded: {prompt}", "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    chunks = [dict(done, choices=[dict(done["choices"][0], finish_reason=None)], usage=None),
              dict(done, choices=[dict(done["choices"][0], text="", finish_reason="stop")], usage=None)]
    return done, "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def completion(body):
    last = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
    if body.get("tools") and body["messages"][-1].get("role") != "tool":
        message = {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": body["tools"][0]["function"]["name"], "arguments": json.dumps({"query": last})}}]}
        finish = "tool_calls"
    elif (body.get("response_format") or {}).get("type") == "json_schema":
        message, finish = {"role": "assistant", "content": json.dumps({"answer": last, "confidence": 1})}, "stop"
    else:
        message, finish = {"role": "assistant", "content": f"recorded: {last}"}, "stop"
    choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": finish}
               for i in range(body.get("n") or 1)]
    return {"id": "chatcmpl-rec", "object": "chat.completion", "created": 1700000000, "model": body.get("model"),
            "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, payload, content_type="application/json", headers=()):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        if (self.headers.get("transfer-encoding") or "").lower() != "chunked":
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""
        raw = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            raw += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return raw

    def handle_any(self):
        raw = self.read_body()
        content_type = self.headers.get("content-type") or ""
        body = json.loads(raw) if raw and not content_type.startswith("multipart/") else None
        url = urlsplit(self.path)
        if url.path == "/__case":
            state.update(case=body, requests=[], fail=list(body.get("fail", [])))
            return self.reply(200, {})
        if url.path == "/__end":
            case = state["case"]
            fixture = {"sdk": {"name": case["sdk"], "version": case["version"]}, "case": case["name"],
                       "requests": state["requests"]}
            out = pathlib.Path(sys.argv[2]) / case["sdk"] / f"{case['name']}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(fixture, indent=2, sort_keys=True) + "\n")
            return self.reply(200, {})
        token = (self.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        recorded = {
            "method": self.command,
            "path": url.path,
            "query": dict(parse_qsl(url.query)),
            "headers": {k: self.headers[k] for k in KEPT_HEADERS if self.headers.get(k) is not None},
            "auth": ROLES.get(token, "unknown"),
            "body": body,
        }
        if raw and body is None:
            recorded["body_text"] = raw.decode()  # exact bytes; a body that is not UTF-8 fails here
        state["requests"].append(recorded)
        if state["fail"]:
            status = state["fail"].pop(0)
            error = {"error": {"message": "recorded fault", "type": "server_error", "param": None, "code": None}}
            return self.reply(status, error, headers=[("retry-after", "0")])
        role = ROLES.get(token)
        if role == "bad":
            return self.reply(401, {"error": {"message": "invalid API key", "type": "authentication_error",
                                              "param": None, "code": "invalid_api_key"}})
        if role == "node" and url.path.startswith("/v1/"):
            return self.reply(403, {"error": {"message": "a node key may not use this route",
                                              "type": "permission_error", "param": None, "code": "insufficient_role"}})
        if url.path == "/v1/models":
            return self.reply(200, {"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "openbeepboop"}]})
        if url.path == "/v1/chat/completions":
            done = completion(body)
            if body.get("stream"):
                chunk = {"id": done["id"], "object": "chat.completion.chunk", "created": done["created"],
                         "model": done["model"], "choices": [{"index": 0, "delta": done["choices"][0]["message"],
                                                               "logprobs": None, "finish_reason": None}]}
                end = dict(chunk, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
                events = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(end)}\n\ndata: [DONE]\n\n"
                return self.reply(200, events.encode(), "text/event-stream")
            return self.reply(200, done)
        if url.path == "/v1/embeddings":
            return self.reply(200, embeddings(body))
        if url.path == "/v1/completions":
            done, events = text_completion(body)
            if body.get("stream"):
                return self.reply(200, events.encode(), "text/event-stream")
            return self.reply(200, done)
        answer = responses_api(self.command, url.path, body)
        if answer is not None and isinstance(answer[1], bytes):
            return self.reply(answer[0], answer[1], "text/event-stream")
        answer = answer or files_and_batches(self.command, url.path, dict(parse_qsl(url.query)), content_type, raw)
        if answer is not None:
            status, payload = answer
            if isinstance(payload, bytes):
                recorded["answer"] = {"status": status, "body_text": payload.decode()}
                return self.reply(status, payload, "application/octet-stream")
            recorded["answer"] = {"status": status, "body": json.loads(json.dumps(payload))}
            return self.reply(status, payload)
        if url.path == "/v1/results/poll":
            return self.reply(200, {"jobs": [JOB]})
        if url.path.startswith("/v1/jobs/"):
            return self.reply(200, JOB)
        return self.reply(404, {"error": {"message": "no route", "type": "invalid_request_error",
                                          "param": None, "code": "not_found"}})

    do_GET = do_POST = do_DELETE = handle_any

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Recorder)
    print("recording", flush=True)
    server.serve_forever()
