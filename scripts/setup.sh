#!/usr/bin/env bash
# Create the virtual environment and install rlhf with everything it needs.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or the torch spec changed.
#   PYTHON=python3.12 scripts/setup.sh                       # another interpreter (3.11+)
#   RLHF_TORCH_SPEC="torch==2.13.0" scripts/setup.sh          # the default: the CPU wheel on these machines
#   RLHF_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128" scripts/setup.sh   # GPUs
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${RLHF_VENV:-.venv}
TORCH_SPEC=${RLHF_TORCH_SPEC:-torch==2.13.0}

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"rlhf needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]} (set PYTHON=...)")
PY

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.rlhf-installed"
want=$( (cat pyproject.toml; echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

echo "setup: installing $TORCH_SPEC"
# torch first and on its own, so that no other package's looser requirement pulls a CUDA build.
# shellcheck disable=SC2086
"$VENV/bin/pip" install --quiet $TORCH_SPEC
echo "setup: installing rlhf and its dependencies"
"$VENV/bin/pip" install --quiet -e ".[dev]"
echo "$want" >"$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
