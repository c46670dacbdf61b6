#!/usr/bin/env bash
# The gateway's API with nothing but curl. Needs a running gateway and a node serving `echo`.
#
#   OBB_BASE_URL=http://127.0.0.1:8000 OBB_API_KEY=sk-obb-... bash examples/curl_walkthrough.sh
set -euo pipefail
base="${OBB_BASE_URL:-http://127.0.0.1:8000}"
auth=(-H "Authorization: Bearer ${OBB_API_KEY:?set OBB_API_KEY to a user key}")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "1. submit: 202 and a job id at once"
job=$(curl -fsS "${auth[@]}" "$base/v1/chat/completions" \
  -d '{"model":"echo","messages":[{"role":"user","content":"Hello from curl"}]}')
id=$(printf '%s' "$job" | field '["id"]')
echo "   $id is $(printf '%s' "$job" | field '["status"]')"

echo "2. long-poll the job until it ends (at most 30 s)"
curl -fsS "${auth[@]}" "$base/v1/jobs/$id?wait=30" | field '["result"]["choices"][0]["message"]["content"]'

echo "3. submit and wait in one request, as an OpenAI client would"
curl -fsS "${auth[@]}" "$base/v1/chat/completions?wait=30" \
  -d '{"model":"echo","messages":[{"role":"user","content":"Waited"}]}' | field '["choices"][0]["message"]["content"]'

echo "4. the same with Prefer: wait=30 and stream: true (server-sent events)"
curl -fsS -N "${auth[@]}" -H "Prefer: wait=30" "$base/v1/chat/completions" \
  -d '{"model":"echo","stream":true,"messages":[{"role":"user","content":"Streamed"}]}' | grep -c '^data: ' | sed 's/^/   events: /'

echo "5. poll several ids at once (unknown ids come back as not_found)"
curl -fsS "${auth[@]}" "$base/v1/results/poll" -d "{\"ids\":[\"$id\",\"job-unknown\"]}" \
  | field '["jobs"]' | sed 's/^/   /'

echo "6. list the latest jobs"
curl -fsS "${auth[@]}" "$base/v1/jobs?limit=3" | field '["data"].__len__()' | sed 's/^/   jobs on this page: /'

echo "7. cancel a job nobody serves, then watch its event stream end"
parked=$(curl -fsS "${auth[@]}" "$base/v1/chat/completions" \
  -d '{"model":"nobody-serves-this","messages":[{"role":"user","content":"x"}]}' | field '["id"]')
curl -fsS -X POST "${auth[@]}" "$base/v1/jobs/$parked/cancel" | field '["status"]' | sed 's/^/   /'
curl -fsS -N "${auth[@]}" "$base/v1/jobs/$parked/stream" | grep '^event:' | sed 's/^/   /'

echo "8. errors are OpenAI envelopes"
curl -sS "${auth[@]}" "$base/v1/chat/completions" -d '{"model":"echo"}' | sed 's/^/   /'
echo
