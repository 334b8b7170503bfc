#!/usr/bin/env bash
# Set up a virtual environment with everything the framework needs, on a fresh machine.
#   bash scripts/setup.sh           # the framework (.venv)
#   bash scripts/setup.sh --test    # the framework and the test tools
# Also makes sure the one real data set here, FashionMNIST, can be found: if it is not in the
# Debian package's folder and apt is available, it installs Debian's dataset-fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test,cluster]"  # the tests cover the launchers and the search too
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
# torch/torchvision first, pinned: these exact builds come from the machine's local wheel cache
# (a newer torch is a multi-GB download).
"$VENV/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install --quiet -e ".${extras}" --config-settings editable_mode=compat  # src/ on the path: Hydra finds hydra_plugins/ there

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: FashionMNIST not found in $FMNIST; installing Debian's dataset-fashion-mnist (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: FashionMNIST not found in $FMNIST and apt-get is not usable here;"
    echo "       the VAE task will download it into data/ (data.download=true) or use data.root=DIR"
  fi
fi
echo "setup: done ($("$VENV/bin/python" -c 'import torch, lightning, hydra, wandb; print("torch", torch.__version__, "lightning", lightning.__version__)'))"
