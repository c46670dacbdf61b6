"""Live streaming through the official OpenAI Python SDK, unmodified, against a real gateway and node.
Run by compat-tests (tests/compat/live.rs) with OBB_BASE_URL, OBB_USER_KEY, OBB_MODEL (a model a
node serves, whose upstream streams with a delay between chunks) and OBB_LATE_MODEL (a model no
node serves until this script prints its `open` line).

It prints one JSON line per case: `live` (a `stream=True` chat with `include_usage`) and
`progress` (the same with `X-OBB-Progress: true`, asked for while the job waits in the queue),
each with what the SDK's iterator handed over and when: every item's `object`, whether it had
`choices`, its text, the mock's `obb_sent_us` and the wall-clock microseconds it arrived at.
The raw bytes of each answer are kept by a transport that only watches (`httpx`'s own, wrapped),
so the driver can tell what the gateway sent from what the SDK made of it."""
import json
import os
import time

import httpx
import openai
from openai import OpenAI

env = os.environ
HI = [{"role": "user", "content": "Hello!"}]


class Watched(httpx.BaseTransport):
    """httpx's transport, keeping a copy of every response body as it is read."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.bodies = []

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        seen = []
        self.bodies.append(seen)

        class Body(httpx.SyncByteStream):
            def __iter__(self):
                for part in response.stream:
                    seen.append(bytes(part))
                    yield part

            def close(self):
                response.stream.close()

        return httpx.Response(response.status_code, headers=response.headers, stream=Body(),
                              extensions=response.extensions, request=request)

    def close(self):
        self.inner.close()


def now_us():
    return time.time_ns() // 1000


def items_of(stream):
    """What the iterator hands over, as a caller that guards `choices` reads it."""
    items = []
    for chunk in stream:
        at = now_us()
        choices = chunk.choices
        text = choices[0].delta.content if choices else None
        usage = chunk.usage.model_dump() if getattr(chunk, "usage", None) else None
        items.append({"object": chunk.object, "choices": choices is not None, "text": text, "usage": usage,
                      "sent_us": getattr(chunk, "obb_sent_us", None), "at_us": at})
    return items


watched = Watched()
client = OpenAI(base_url=f"{env['OBB_BASE_URL']}/v1", api_key=env["OBB_USER_KEY"],
                http_client=httpx.Client(transport=watched, timeout=60))

started = now_us()
live = client.chat.completions.create(model=env["OBB_MODEL"], messages=HI, stream=True,
                                      stream_options={"include_usage": True})
print(json.dumps({"case": "live", "started_us": started, "items": items_of(live),
                  "raw": b"".join(watched.bodies[-1]).decode()}), flush=True)

raw = client.chat.completions.with_raw_response.create(
    model=env["OBB_LATE_MODEL"], messages=HI, stream=True, stream_options={"include_usage": True},
    extra_headers={"X-OBB-Progress": "true"})
print(json.dumps({"case": "open", "job": raw.headers["x-obb-job-id"]}), flush=True)
progress = items_of(raw.parse())
print(json.dumps({"case": "progress", "items": progress, "raw": b"".join(watched.bodies[-1]).decode()}),
      flush=True)
print("python stream cases passed with openai", openai.__version__, flush=True)
