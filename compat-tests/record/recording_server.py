"""A small server that records what the official OpenAI SDKs send, for compat-tests.

It answers like OpenAI would (completions, streams, tool calls, models, errors) so the SDKs
carry on, and writes one fixture per case. Control endpoints, used by the catalogue scripts
between SDK calls:
    POST /__case {"name", "sdk", "version", "fail": [429, ...]}   start a case
    POST /__end                                                    write its fixture
Usage: python recording_server.py PORT FIXTURES_DIR
"""
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

state = {"case": None, "requests": [], "fail": []}


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

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
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
        state["requests"].append({
            "method": self.command,
            "path": url.path,
            "query": dict(parse_qsl(url.query)),
            "headers": {k: self.headers[k] for k in KEPT_HEADERS if self.headers.get(k) is not None},
            "auth": ROLES.get(token, "unknown"),
            "body": body,
        })
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
