#!/usr/bin/env bash
# Re-records every fixture in compat-tests/fixtures from the official OpenAI SDKs.
# Installs the pinned SDKs under target/, starts the recording server on loopback, and runs
# the catalogue through each SDK. Usage: bash compat-tests/record/record.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON_SDK=3.54.0
NODE_SDK=7.57.0

[ -x target/py-venv/bin/python ] || python3 -m venv target/py-venv
target/py-venv/bin/pip install -q "openai==$PYTHON_SDK"
npm install --silent --no-audit --no-fund --prefix target/node-sdk "openai@$NODE_SDK"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf compat-tests/fixtures/python compat-tests/fixtures/node
python3 compat-tests/record/recording_server.py "$port" compat-tests/fixtures &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/v1/models" -H "Authorization: Bearer sk-obb-compat-user" >/dev/null && break; sleep 0.1; done
target/py-venv/bin/python compat-tests/record/catalogue_python.py "http://127.0.0.1:$port"
NODE_PATH=target/node-sdk/node_modules node compat-tests/record/catalogue_node.cjs "http://127.0.0.1:$port"
ls compat-tests/fixtures/*/ | head -50
