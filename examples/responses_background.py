"""The Responses API in background mode with the official OpenAI Python SDK, unchanged.

    pip install openai
    OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... python examples/responses_background.py

`background=True` answers at once with the response `queued`. Its id (`resp_...`) is a job
in the queue, so it survives a gateway restart and `/v1/jobs/{id}` reads it too; a node
runs it on its upstream (natively, or translated to chat completions where the upstream
has no `/v1/responses`). OBB_MODEL picks the model (default `echo`, the node's built-in
test model).
"""
import os
import time

from openai import OpenAI

base = os.environ.get("OBB_BASE_URL", "http://127.0.0.1:8000")
key = os.environ["OBB_API_KEY"]
model = os.environ.get("OBB_MODEL", "echo")

client = OpenAI(base_url=f"{base}/v1", api_key=key)

# Queue it, then read it until it has ended, as OpenAI's guide to background mode does.
response = client.responses.create(model=model, input="What does a queue keep?", background=True)
print("queued:", response.id, response.status)
while response.status in ("queued", "in_progress"):
    time.sleep(0.2)
    response = client.responses.retrieve(response.id)
print(f"polled: {response.status}: {response.output_text}")

# Or follow it: retrieve with stream=True holds the call until the response ends, then
# sends its events.
queued = client.responses.create(model=model, input="Stream this one.", background=True)
events = client.responses.retrieve(queued.id, stream=True)
text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
print("streamed:", text)

# A conversation: previous_response_id continues from a finished response.
follow = client.responses.create(
    model=model, input="And what does it give back?", previous_response_id=response.id, background=True
)
for event in client.responses.retrieve(follow.id, stream=True):
    if event.type == "response.completed":
        print("follow-up:", event.response.output_text)
