import os
import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_the_python_client_example_runs(stack):
    env = {**os.environ, "OBB_BASE_URL": stack.base_url, "OBB_API_KEY": stack.user}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_client.py")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "answer: echo: Hello!" in done.stdout
    assert "Say goodbye. -> echo: Say goodbye." in done.stdout


ROOT = EXAMPLES.parent


def run_example(stack, *command, timeout=120, env=None):
    env = {
        **os.environ,
        "OBB_BASE_URL": stack.base_url,
        "OBB_API_KEY": stack.user,
        "NODE_PATH": str(ROOT / "target" / "node-sdk" / "node_modules"),
        **(env or {}),
    }
    done = subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_curl_walkthrough_runs(stack):
    out = run_example(stack, "bash", str(EXAMPLES / "curl_walkthrough.sh"))
    assert "echo: Hello from curl" in out and "echo: Waited" in out
    assert "events: 3" in out, out  # a content chunk, a finish chunk, then [DONE]
    assert "not_found" in out and "event: cancelled" in out
    assert '"param":"messages"' in out


def test_the_openai_python_sdk_example_runs(stack):
    out = run_example(stack, sys.executable, str(EXAMPLES / "openai_python_sdk.py"))
    assert "plain: echo: Hello, SDK!" in out
    assert "streamed: echo: Stream me" in out
    # The session's stack also lists the models the tests leased jobs of as a node.
    assert "models: ['echo'" in out


def test_the_openai_node_sdk_example_runs(stack):
    sdk = ROOT / "target" / "node-sdk" / "node_modules" / "openai"
    assert sdk.exists(), "the Node SDK (`openai` in target/node-sdk) is missing: run ./test.sh, which installs it"
    out = run_example(stack, "node", str(EXAMPLES / "openai_node_sdk.cjs"))
    assert "plain: echo: Hello, Node!" in out
    assert "streamed: echo: Stream me" in out
    assert "models: echo" in out


def test_the_jsonl_batch_example_runs_the_batch_api_with_the_sdk(stack, tmp_path):
    import json
    import re

    results = tmp_path / "results.jsonl"
    batches = []
    for _ in range(2):  # a re-run finds the same batch: the Idempotency-Keys come from the file
        out = run_example(stack, sys.executable, str(EXAMPLES / "jsonl_batch.py"), str(EXAMPLES / "requests.jsonl"), str(results))
        assert "completed: 3/3 completed, 0 failed" in out, out
        batches.append(re.search(r"batch (batch_\S+)", out).group(1))
    assert batches[0] == batches[1]

    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == ["greeting", "question", "farewell"]
    assert [line["status"] for line in lines] == ["completed"] * 3
    assert lines[1]["response"]["choices"][0]["message"]["content"] == "echo: What is a queue?"


def test_the_embeddings_example_runs_with_the_sdk(upstream_stack):
    out = run_example(upstream_stack, sys.executable, str(EXAMPLES / "embeddings.py"), env={"OBB_EMBEDDING_MODEL": "m"})
    assert "one: 3 dimensions, 10 prompt tokens" in out, out  # the mock's vectors have 3
    assert "many: 3 vectors, indexes [0, 1, 2]" in out
    assert "concurrent: 16 requests, 16 vectors" in out


def test_the_responses_background_example_runs_with_the_sdk(stack):
    out = run_example(stack, sys.executable, str(EXAMPLES / "responses_background.py"))
    assert "queued: resp_" in out and " queued\n" in out, out
    assert "polled: completed: echo: What does a queue keep?" in out
    assert "streamed: echo: Stream this one." in out
    assert "follow-up: echo: And what does it give back?" in out
