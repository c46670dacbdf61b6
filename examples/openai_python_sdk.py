"""The official OpenAI Python SDK, unchanged, pointed at the gateway.

    pip install openai
    OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... python examples/openai_python_sdk.py
"""
import os

from openai import OpenAI

base = os.environ.get("OBB_BASE_URL", "http://127.0.0.1:8000")
key = os.environ["OBB_API_KEY"]

# `wait` makes each call synchronous: the gateway holds it until the job is done.
client = OpenAI(base_url=f"{base}/v1", api_key=key, default_query={"wait": 60})
reply = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "Hello, SDK!"}])
print("plain:", reply.choices[0].message.content)

# The Prefer header works too, and stream=True gets a real event stream.
streaming = OpenAI(base_url=f"{base}/v1", api_key=key, default_headers={"Prefer": "wait=60"})
stream = streaming.chat.completions.create(
    model="echo", messages=[{"role": "user", "content": "Stream me"}], stream=True
)
print("streamed:", "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))

print("models:", [model.id for model in client.models.list()])
