"""Submit a JSONL file of chat requests and collect the results into another JSONL file,
like OpenAI's Batch API, with nothing but the openbeepboop client.

Each input line is a ChatCompletion request, optionally with a `custom_id`. Each output line
is `{"custom_id", "id", "status", "response"}` or `{..., "error"}`, in input order. Re-running
with the same input submits nothing twice: the batch id comes from the file's content.

    pip install -e python/
    OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... \
        python examples/jsonl_batch.py examples/requests.jsonl results.jsonl
"""
import hashlib
import json
import sys

from openbeepboop import Client


def main(source: str, target: str) -> None:
    with open(source, "rb") as handle:
        raw = handle.read()
    requests = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    custom_ids = [request.pop("custom_id", f"request-{i}") for i, request in enumerate(requests)]
    client = Client()
    batch_id = "jsonl-" + hashlib.sha256(raw).hexdigest()[:24]
    handles = client.chat.completions.create_many(requests, batch_id=batch_id)
    print(f"submitted {len(handles)} jobs as batch {batch_id}", file=sys.stderr)
    jobs = client.jobs.wait_all(handles, progress=True)
    with open(target, "w") as out:
        for custom_id, job in zip(custom_ids, jobs):
            line = {"custom_id": custom_id, "id": job["id"], "status": job["status"]}
            if job.is_completed:
                line["response"] = job["result"]
            else:
                line["error"] = job.get("error")
            out.write(json.dumps(line) + "\n")
    done = sum(job.is_completed for job in jobs)
    print(f"{done}/{len(jobs)} completed; results in {target}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
