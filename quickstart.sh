#!/usr/bin/env bash
# One command to try OpenBeepBoop: builds the binaries, sets up a gateway (SQLite under the
# XDG data dir) and a node, runs a demo job, prints the keys and snippets to paste, and
# serves until Ctrl-C.
#
#   ./quickstart.sh
#
# The node uses a local Ollama (11434), LM Studio (1234) or llama.cpp server (8080) when
# one answers, and the built-in `echo` model otherwise. Settings, all optional:
#   OBB_PORT (8000), OBB_BIN_DIR (skip the build and use these binaries),
#   OBB_DEMO_LLM_PORTS ("11434 1234 8080"), XDG_DATA_HOME, XDG_CONFIG_HOME.
set -euo pipefail
cd "$(dirname "$0")"

port="${OBB_PORT:-8000}"
data="${XDG_DATA_HOME:-$HOME/.local/share}/openbeepboop"
config_dir="${XDG_CONFIG_HOME:-$HOME/.config}/openbeepboop"
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

model=echo
upstream=""
for probe in ${OBB_DEMO_LLM_PORTS:-11434 1234 8080}; do
  if listed=$(curl -fsS --max-time 1 "http://127.0.0.1:$probe/v1/models" 2>/dev/null); then
    found=$(printf '%s' "$listed" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d[0]["id"] if d else "")' 2>/dev/null || true)
    if [ -n "$found" ]; then
      model="$found"
      upstream="$probe"
      break
    fi
  fi
done

node_config="$config_dir/quickstart_node_config.toml"
{
  printf '[server]\nurl = "http://127.0.0.1:%s"\napi_key = "%s"\n\n' "$port" "$node_key"
  if [ -n "$upstream" ]; then
    printf '[local_llm]\nenabled = true\nport = %s\n\n[node]\nname = "quickstart-node"\nmodels = ["%s", "echo"]\n' "$upstream" "$model"
  else
    printf '[node]\nname = "quickstart-node"\nmodels = ["echo"]\n'
  fi
} > "$node_config"

pids=()
stop() {
  echo
  echo "==> stopping"
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit 0
}
trap stop INT TERM

OBB_LOG=warn "$gateway" start --host 127.0.0.1 --port "$port" --db "$db" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
OBB_LOG=warn "$node" run --config "$node_config" &
pids+=($!)

if [ -n "$upstream" ]; then
  echo "==> node serves \`$model\` from the local LLM server on port $upstream"
else
  echo "==> no local LLM server answered; the node serves the built-in \`echo\` model (it repeats your message)"
fi
echo "==> demo job: POST /v1/chat/completions?wait=60"
curl -sS "http://127.0.0.1:$port/v1/chat/completions?wait=60" \
  -H "Authorization: Bearer $user_key" \
  -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello to OpenBeepBoop.\"}],\"max_tokens\":32}"
echo
cat <<TXT

==> keys (kept in $keys)
  admin: ${admin_key:-(made by an earlier run; see obb-gateway keys list)}
  user:  $user_key
  node:  $node_key

==> try it with curl
  curl -s "http://127.0.0.1:$port/v1/chat/completions?wait=60" -H "Authorization: Bearer $user_key" \\
    -d '{"model":"$model","messages":[{"role":"user","content":"Hello!"}]}'

==> or with the OpenAI Python SDK (pip install openai)
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:$port/v1", api_key="$user_key", default_query={"wait": 60})
  print(client.chat.completions.create(model="$model", messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)

==> serving on http://127.0.0.1:$port; Ctrl-C stops the gateway and the node
TXT
wait
