#!/usr/bin/env bash
# A separate venv with SAEBench 0.6.0 for the saebench-parity check (issue 13, point 4), CPU only.
# Idempotent: a stamp file records the pinned set; re-running with the stamp present does nothing.
#   bench/saebench_env.sh            # creates /work/main/.venv-saebench (or $SAEBENCH_VENV)
# Pins (measured to resolve together): torch 2.13.0 (the CPU build pip finds on this machine, or the one of
# $TORCH_INDEX), sae-bench 0.6.0, sae-lens 6.54.12, transformer-lens 3.9.0, beartype 0.14.1 (0.23 breaks sae-bench).
# sae-bench requires torchvision; pip's torchvision is a CUDA build whose import breaks transformers' Gemma-3 classes
# on a CPU torch, and nothing used here needs it: it is uninstalled after the install. sae-probes pulls xgboost, whose
# Linux wheel requires nvidia-nccl-cu12 (multi-GPU training only; xgboost imports without it): uninstalled as well.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAEBENCH_VENV:-$ROOT/.venv-saebench}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3.12 || command -v python3)}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PINS="sae-bench==0.6.0 sae-lens==6.54.12 transformer-lens==3.9.0 beartype==0.14.1"
STAMP="$VENV/.saebench-installed"
WANT="torch==$TORCH_VERSION $PINS"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "[saebench-env] $VENV is up to date ($WANT)"; exit 0
fi
start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
NICE="nice -n 19"
$NICE "$PY" -m pip install -q --upgrade pip
# torch first and pinned: an unpinned or ranged torch would pull a multi-GB CUDA build.
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  $NICE "$PY" -m pip install -q "torch==$TORCH_VERSION" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
fi
# Constraints stop pip from replacing torch (a CUDA wheel) while resolving sae-bench.
CONSTRAINTS="$VENV/saebench-constraints.txt"
"$PY" -m pip freeze | grep -i '^torch==' > "$CONSTRAINTS"
$NICE "$PY" -m pip install -q -c "$CONSTRAINTS" $PINS
"$PY" -m pip uninstall -y -q torchvision nvidia-nccl-cu12 || true
# No CUDA wheel may remain (a CUDA torch pulls nvidia-* packages).
if "$PY" -m pip freeze | grep -i -E '^(nvidia-|triton==|torchvision==)'; then
  echo "[saebench-env] CUDA wheels found in $VENV (listed above)" >&2; exit 1
fi
"$PY" - <<'EOF'
import torch, sae_bench, sae_lens, transformer_lens, beartype
from importlib.metadata import version
from sae_bench.evals.absorption import main  # noqa: F401  (imports transformers' model classes)
assert torch.version.cuda is None, "CUDA torch in the SAEBench venv"
print("[saebench-env] torch", torch.__version__, "| sae-bench", version("sae-bench"), "| sae-lens", sae_lens.__version__,
      "| transformer-lens", version("transformer-lens"), "| beartype", beartype.__version__)
EOF
echo "$WANT" > "$STAMP"
echo "[saebench-env] ready in $(( $(date +%s) - start )) s: $VENV"
