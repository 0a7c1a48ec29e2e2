#!/usr/bin/env bash
# Set up a polychat development environment (idempotent; fast when everything is already there).
#
#   bash scripts/setup.sh          # venv + `pip install -e '.[local]'` (the client and the embedded model)
#   bash scripts/setup.sh --test   # also the test extras and the Debian packages the tests start
#                                  # (tinyproxy, microsocks, chromium, redis-server)
#
# Environment:
#   POLYCHAT_VENV          venv path (default: <repo>/.venv)
#   POLYCHAT_PYTHON        interpreter used to create the venv (default: python3)
#   POLYCHAT_SETUP_FORCE=1 reinstall the project even if the install stamp says it is up to date
#   XDG_CACHE_HOME         the portable llama-cpp-python wheel lives in
#                          ${XDG_CACHE_HOME:-$HOME/.cache}/polychat/wheels/portable/
#
# The core package (`pip install polychat`) needs no compiler; the embedded model is the `local` extra, whose
# llama-cpp-python is compiled from source. A native build (-march=native) segfaults on some machines
# inside the AMX kernels, so we build it portable, keep the wheel in our own directory, and never let pip
# build it again or pick a natively built wheel out of its own cache.
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1

LLAMA_CPP_VERSION="0.3.36"
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
TEST_APT_PACKAGES=(tinyproxy microsocks chromium redis-server)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POLYCHAT_VENV:-$ROOT/.venv}"
PYTHON="${POLYCHAT_PYTHON:-python3}"
WHEEL_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/polychat/wheels/portable"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

WITH_TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) WITH_TEST=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown argument: $arg" ;;
    esac
done

# run_quiet DESCRIPTION CMD... : run CMD with its output in a temp log; on failure show the tail and exit.
run_quiet() {
    local desc="$1" out
    shift
    out="$(mktemp "${TMPDIR:-/tmp}/polychat-setup.XXXXXX")"
    if ! "$@" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        die "$desc failed (full log: $out)"
    fi
    rm -f "$out"
}

# ---------------------------------------------------------------------------------------------- root / apt
SUDO=()
can_be_root() {
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        return 1
    fi
}

POLICY_RC_D=/usr/sbin/policy-rc.d
CREATED_POLICY_RC_D=0
cleanup() {
    if [ "$CREATED_POLICY_RC_D" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY_RC_D" || true
    fi
}
trap cleanup EXIT

# apt_install PKG... : install Debian packages without starting their services.
apt_install() {
    # Debian starts daemons (tinyproxy on :8888) right after installing them unless policy-rc.d says no.
    if [ ! -e "$POLICY_RC_D" ]; then
        printf '#!/bin/sh\n# temporary, from polychat scripts/setup.sh\nexit 101\n' \
            | "${SUDO[@]}" tee "$POLICY_RC_D" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY_RC_D"
        CREATED_POLICY_RC_D=1
    fi
    run_quiet "apt-get update" "${SUDO[@]}" apt-get update -qq
    run_quiet "apt-get install $*" "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
    cleanup
    CREATED_POLICY_RC_D=0
}

ensure_test_packages() {
    local missing=() pkg
    for pkg in "${TEST_APT_PACKAGES[@]}"; do
        command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if ! can_be_root; then
        log "WARNING: the tests need these Debian packages, which are missing: ${missing[*]}"
        log "WARNING: install them as root:  apt-get install --no-install-recommends ${missing[*]}"
        return 0
    fi
    local tinyproxy_was_running=0
    if [ -e /run/tinyproxy/tinyproxy.pid ]; then
        tinyproxy_was_running=1
    fi
    log "apt-get install ${missing[*]}"
    apt_install "${missing[@]}"
    # The tests start their own tinyproxy on a free port; the system service must not run on :8888.
    if [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now tinyproxy >/dev/null 2>&1 || true
    fi
    if [ "$tinyproxy_was_running" -eq 0 ] && [ -s /run/tinyproxy/tinyproxy.pid ]; then
        local pid
        pid="$(cat /run/tinyproxy/tinyproxy.pid)"
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = tinyproxy ]; then
            log "stopping the tinyproxy service the package started (pid $pid)"
            "${SUDO[@]}" kill "$pid" || true
        fi
    fi
}

# ---------------------------------------------------------------------------------------------- venv
ensure_venv() {
    if [ -x "$VENV/bin/python" ]; then
        return 0
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set POLYCHAT_PYTHON)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is older than 3.10 (set POLYCHAT_PYTHON)"
    log "creating venv $VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        # Debian's own python3 needs python3-venv for ensurepip.
        can_be_root || die "'$PYTHON -m venv' failed; install python3-venv (Debian) and retry"
        log "apt-get install python3-venv"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV"
    fi
    run_quiet "upgrading pip in the new venv" "$VENV/bin/python" -m pip install --upgrade pip
}

# ---------------------------------------------------------------------------------------------- llama-cpp-python
LLAMA_WHEEL=""
find_portable_wheel() {
    local found
    shopt -s nullglob
    found=("$WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*-linux_"$(uname -m)".whl)
    shopt -u nullglob
    LLAMA_WHEEL="${found[0]:-}"
}

build_portable_wheel() {
    if ! command -v cc >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
        can_be_root || die "a C/C++ compiler is needed to build llama-cpp-python: apt-get install build-essential"
        log "apt-get install build-essential"
        apt_install build-essential
    fi
    local tmp build_log
    tmp="$(mktemp -d "$WHEEL_DIR/.build.XXXXXX")"
    build_log="$WHEEL_DIR/build-$LLAMA_CPP_VERSION.log"
    log "building portable llama-cpp-python $LLAMA_CPP_VERSION from source (~5 min on 2 cores; log: $build_log)"
    # --no-cache-dir: never reuse (or store) a wheel from pip's cache, which may hold a native build.
    # --no-binary:    never take a prebuilt wheel from an index or find-links.
    if ! CMAKE_ARGS="$PORTABLE_CMAKE_ARGS" FORCE_CMAKE=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
            "$VENV/bin/python" -m pip wheel --no-cache-dir --no-deps \
            --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION" \
            >"$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        rm -rf "$tmp"
        die "building llama-cpp-python failed (full log: $build_log)"
    fi
    # Move into place only when complete, so an interrupted build never leaves a half wheel behind.
    mv "$tmp"/llama_cpp_python-*.whl "$WHEEL_DIR"/
    rm -rf "$tmp"
}

ensure_portable_wheel() {
    mkdir -p "$WHEEL_DIR"
    find_portable_wheel
    if [ -n "$LLAMA_WHEEL" ]; then
        return 0
    fi
    # Serialise concurrent setups so the wheel is built once.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$WHEEL_DIR/.lock"
        flock 9
        find_portable_wheel
    fi
    if [ -z "$LLAMA_WHEEL" ]; then
        build_portable_wheel
        find_portable_wheel
    fi
    [ -n "$LLAMA_WHEEL" ] || die "no llama-cpp-python wheel in $WHEEL_DIR after building"
    if command -v flock >/dev/null 2>&1; then
        exec 9>&-
    fi
}

venv_dist_version() {  # prints the installed version of a distribution in the venv, or nothing
    "$VENV/bin/python" - "$1" 2>/dev/null <<'EOF' || true
import importlib.metadata as md, sys
try:
    print(md.version(sys.argv[1]))
except md.PackageNotFoundError:
    pass
EOF
}

LLAMA_MARKER="$VENV/.polychat-llama-cpp-portable"
ensure_llama_installed() {
    local want
    want="$(basename "$LLAMA_WHEEL") $(sha256sum "$LLAMA_WHEEL" | cut -d' ' -f1)"
    if [ -f "$LLAMA_MARKER" ] && [ "$(cat "$LLAMA_MARKER")" = "$want" ] \
            && [ "$(venv_dist_version llama_cpp_python)" = "$LLAMA_CPP_VERSION" ]; then
        return 0
    fi
    log "installing $(basename "$LLAMA_WHEEL") into the venv"
    # --force-reinstall: replace any other build of the same version (e.g. a native one).
    run_quiet "installing $LLAMA_WHEEL" \
        "$VENV/bin/python" -m pip install --force-reinstall --no-deps "$LLAMA_WHEEL"
    printf '%s\n' "$want" >"$LLAMA_MARKER"
}

# ---------------------------------------------------------------------------------------------- project
ensure_project_installed() {
    local target="[local]" mode="base" stamp_file="$VENV/.polychat-install-stamp" key
    if [ "$WITH_TEST" -eq 1 ]; then
        target="[local,test]"
        mode="test"
    fi
    # The stamp holds "<hash of pyproject.toml + llama marker> <repo root> <base|test>".
    key="$(cat "$ROOT/pyproject.toml" "$LLAMA_MARKER" | sha256sum | cut -d' ' -f1) $ROOT"
    if [ "${POLYCHAT_SETUP_FORCE:-0}" != 1 ] && [ -f "$stamp_file" ] \
            && [ -n "$(venv_dist_version polychat)" ]; then
        local stamp
        stamp="$(cat "$stamp_file")"
        # A test install also satisfies a plain one.
        if [ "$stamp" = "$key $mode" ] || [ "$stamp" = "$key test" ]; then
            log "up to date (${stamp##* } install in $VENV)"
            return 0
        fi
    fi
    log "pip install -e '.$target'"
    local constraints
    constraints="$(mktemp "${TMPDIR:-/tmp}/polychat-constraints.XXXXXX")"
    printf 'llama-cpp-python==%s\n' "$LLAMA_CPP_VERSION" >"$constraints"
    # The constraint + --only-binary + --find-links make pip keep (or take) our portable wheel and
    # never build or download another llama-cpp-python.
    run_quiet "pip install -e '.$target'" "$VENV/bin/python" -m pip install \
        --find-links "$WHEEL_DIR" --only-binary llama-cpp-python -c "$constraints" -e "$ROOT$target"
    rm -f "$constraints"
    printf '%s %s\n' "$key" "$mode" >"$stamp_file"
}

if [ "$WITH_TEST" -eq 1 ]; then
    ensure_test_packages
fi
ensure_venv
ensure_portable_wheel
ensure_llama_installed
ensure_project_installed
