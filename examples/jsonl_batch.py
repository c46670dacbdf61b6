"""The OpenAI Batch API on the gateway, with the official `openai` SDK unchanged: upload a
JSONL file of requests, create a batch, follow its `request_counts`, then write the results,
in input order, to another JSONL file.

Run it against a gateway with a node serving `echo` (see README.md):
    pip install openai
    OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... \
        python examples/jsonl_batch.py examples/requests.jsonl results.jsonl

Each input line is `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`.
Each output line is `{"custom_id", "status": "completed", "response": <the ChatCompletion>}`
or `{"custom_id", "status": "failed", "error": ...}`. Running it again with the same input
finds the same batch (its Idempotency-Key comes from the file's content), so a run that was
interrupted resumes waiting instead of submitting everything twice.
(The `openbeepboop` package does all of this in one call: `Client().batches.run(path)`.)
"""
import hashlib
import json
import os
import sys
import time

from openai import OpenAI

FINAL = ("completed", "failed", "expired", "cancelled")


def main(source: str, target: str) -> None:
    base = os.environ.get("OBB_BASE_URL", "http://127.0.0.1:8000")
    client = OpenAI(base_url=f"{base}/v1", api_key=os.environ["OBB_API_KEY"])
    with open(source, "rb") as handle:
        raw = handle.read()
    key = "jsonl-batch-" + hashlib.sha256(raw).hexdigest()[:32]

    with open(source, "rb") as handle:
        upload = client.files.create(
            file=handle, purpose="batch", extra_headers={"Idempotency-Key": f"{key}-file"}
        )
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"source": os.path.basename(source)},
        extra_headers={"Idempotency-Key": f"{key}-batch"},
    )
    while batch.status not in FINAL:
        counts = batch.request_counts
        done = counts.completed + counts.failed if counts else 0
        print(f"\r{batch.id}: {batch.status}, {done}/{counts.total if counts else 0} done",
              end="", file=sys.stderr, flush=True)
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    print(file=sys.stderr)
    if batch.status == "failed":
        for error in batch.errors.data:
            print(f"line {error.line}: {error.message}", file=sys.stderr)
        sys.exit(f"batch {batch.id} failed")

    # Completed lines are in the output file, the others in the error file, in no set order.
    lines = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            for text in client.files.content(file_id).text.splitlines():
                line = json.loads(text)
                lines[line["custom_id"]] = line
    order = [json.loads(text)["custom_id"] for text in raw.decode().splitlines() if text.strip()]
    with open(target, "w") as out:
        for custom_id in order:
            line = lines.get(custom_id) or {"error": {"code": "missing", "message": "no result"}}
            response = line.get("response") or {}
            if response.get("status_code") == 200:
                record = {"custom_id": custom_id, "status": "completed", "response": response["body"]}
            else:
                record = {"custom_id": custom_id, "status": "failed",
                          "error": line.get("error") or response.get("body")}
            out.write(json.dumps(record) + "\n")
    counts = batch.request_counts
    print(f"batch {batch.id} {batch.status}: {counts.completed}/{counts.total} completed, "
          f"{counts.failed} failed; results in {target}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
