"""The Python client, end to end: one job, then a batch.

Run it against a gateway with a node serving `echo` (see README.md):
    pip install -e python/
    OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... python examples/python_client.py
"""
from openbeepboop import Client

client = Client()  # reads OBB_BASE_URL and OBB_API_KEY

# One job: submit, then wait for it with the gateway's long-poll.
handle = client.chat.completions.create(
    model="echo",
    messages=[{"role": "user", "content": "Hello!"}],
    temperature=0.2,
)
print(f"submitted {handle.id} ({handle.status})")
result = handle.get(wait=True, timeout=60)
print("answer:", result.choices[0].message.content)

# A batch: submitted concurrently, idempotently, then gathered as they finish.
questions = ["What is 2+2?", "Name a colour.", "Say goodbye."]
handles = client.chat.completions.create_many(
    [{"model": "echo", "messages": [{"role": "user", "content": q}]} for q in questions]
)
for question, job in zip(questions, client.jobs.wait_all(handles, timeout=120, progress=True)):
    if job.is_completed:
        print(f"{question} -> {job.result.choices[0].message.content}")
    else:
        print(f"{question} -> {job.status}: {job.error.message}")

# Poll by id at any time later; unknown ids come back as `not_found`.
for job in client.jobs.poll([h.id for h in handles]):
    print(job.id, job.status)
