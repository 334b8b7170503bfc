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
# torch/torchvision pinned: these exact builds come from the machine's local wheel cache (a newer
# torch is a multi-GB download). uv when it is there or installable from the package index (it
# installed the whole stack in ~18 s here, pip takes minutes); pip otherwise (SETUP_PIP=1 forces it).
TORCH=(torch==2.14.1 torchvision==0.29.1)
pip_setting() { "$VENV/bin/python" -m pip config get "$1" 2>/dev/null || true; }
UV=""
if [ -z "${SETUP_PIP:-}" ]; then
  if command -v uv >/dev/null 2>&1; then
    UV=$(command -v uv)
  elif "$VENV/bin/python" -m pip install --quiet uv >/dev/null 2>&1; then
    UV="$VENV/bin/uv"
  else
    echo "setup: uv is not installable here; installing with pip (minutes)"
  fi
fi
if [ -n "$UV" ]; then
  # uv reads no pip configuration: hand it pip's local indexes, wheel folder and constraints, so that
  # it takes the same local builds pip would
  uv_args=()
  for url in ${PIP_EXTRA_INDEX_URL:-$(pip_setting global.extra-index-url)}; do uv_args+=(--extra-index-url "$url"); done
  for dir in ${PIP_FIND_LINKS:-$(pip_setting global.find-links)}; do uv_args+=(--find-links "$dir"); done
  constraint=${PIP_CONSTRAINT:-$(pip_setting global.constraint)}
  [ -n "$constraint" ] && [ -f "$constraint" ] && uv_args+=(--constraint "$constraint")
  uv_args+=(--index-strategy unsafe-best-match)  # as pip does: the best version on any index (torch is pinned)
  echo "setup: installing with uv ($("$UV" --version))"
  # --compile-bytecode: as pip does; without it every first import (each test worker, each CLI run)
  # compiles torch's, Lightning's and transformers' sources (the first test run took 205 s instead of 142 s)
  if ! "$UV" pip install --quiet --compile-bytecode --python "$VENV/bin/python" "${uv_args[@]}" "${TORCH[@]}" \
    -e ".${extras}" --config-settings editable_mode=compat; then  # src/ on the path: Hydra finds hydra_plugins/ there
    echo "setup: uv could not install the stack (its message is above); installing with pip instead (minutes)"
    UV=""
  fi
fi
if [ -z "$UV" ]; then
  "$VENV/bin/python" -m pip install --quiet "${TORCH[@]}"
  "$VENV/bin/python" -m pip install --quiet -e ".${extras}" --config-settings editable_mode=compat
fi

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
