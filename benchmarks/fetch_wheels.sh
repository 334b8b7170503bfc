#!/usr/bin/env bash
# Wheels of what the lent GPU machine lacks (it has torch, torchvision, transformers, lightning,
# scikit-learn), for Python 3.12 on x86-64 Linux, into .whl/ (git-ignored): gpu_check.sh installs them.
#   bash benchmarks/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
platforms=()
for n in 28 27 24 17; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# the versions .venv holds (pyproject's ranges); the benchmarks import hydra, omegaconf and open_clip;
# wandb and umap-learn come along for full task runs there (umap's numba/llvmlite, ~45 MB, do not:
# no benchmark projects with umap)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
  hydra-core==1.3.8 omegaconf==2.3.1 open_clip_torch==3.3.0 ftfy==6.3.1 \
  wcwidth==0.9.4 timm==1.0.31 wandb==0.31.0 umap-learn==0.5.12 pynndescent==0.7.0 \
  litdata==0.2.76 boto3==1.44.8 botocore==1.44.8 s3transfer==0.19.3 jmespath==1.1.0 tifffile==2026.3.3 \
  obstore==0.12.1  # litdata and its own: data_path.py's shard rows (data=shards, litdata's loader)
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # omegaconf's; an sdist only: built here
ls .whl
