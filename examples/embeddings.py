"""Embeddings through the queue with the official OpenAI Python SDK, unchanged.

    pip install openai
    OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... \\
        OBB_EMBEDDING_MODEL=nomic-embed-text python examples/embeddings.py

It needs a node whose upstream embeds (`/v1/embeddings` among its endpoints: an `[llm]`
API, or Ollama or LM Studio; see examples/node-configs/). Each request becomes a durable
job, and `wait` holds the call until a node has run it. A node sends the embeddings jobs
queued for one model upstream together, as one call (`[node] embeddings_pack_max`, 64 by
default), and each job still gets exactly its own vectors.
"""
import os
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

base = os.environ.get("OBB_BASE_URL", "http://127.0.0.1:8000")
key = os.environ["OBB_API_KEY"]
model = os.environ.get("OBB_EMBEDDING_MODEL", "nomic-embed-text")

client = OpenAI(base_url=f"{base}/v1", api_key=key, default_query={"wait": 60})

# One text: one vector of floats.
one = client.embeddings.create(model=model, input="A queue keeps every request until a node runs it.")
print(f"one: {len(one.data[0].embedding)} dimensions, {one.usage.prompt_tokens} prompt tokens")

# Several texts in one request: one vector each, in input order.
texts = ["first document", "second document", "third document"]
many = client.embeddings.create(model=model, input=texts, encoding_format="float")
print(f"many: {len(many.data)} vectors, indexes {[item.index for item in many.data]}")

# Many requests at once, as an indexer sends them: the node packs what is queued together.
chunks = [f"chunk {n} of the handbook" for n in range(16)]
with ThreadPoolExecutor(max_workers=8) as pool:
    answers = list(pool.map(lambda text: client.embeddings.create(model=model, input=text), chunks))
print(f"concurrent: {len(answers)} requests, {sum(len(a.data) for a in answers)} vectors")
