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
