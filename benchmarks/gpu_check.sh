#!/usr/bin/env bash
# Every benchmark in one prepared run, sized to finish in under 9 minutes on one H100/H200 (data_path and resnet_folder not yet
# measured there: its rows were never run on a GPU):
# a JSON and a log per benchmark, OUT/summary.json and OUT/summary.md (one markdown table).
#   bash benchmarks/fetch_wheels.sh                      # here, once: .whl/ with what the GPU machine lacks
#   bash benchmarks/gpu_check.sh OUT                     # there (or anywhere with a GPU)
#   bash benchmarks/gpu_check.sh OUT --tiny --device cpu # the dry run the tests do, in seconds
# Extra arguments go to every benchmark. Exit 1 if any benchmark failed or ran past LIMIT_S seconds
# (default 200; its log says why). PYTHON: the interpreter (default: the project's .venv, else python3).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT [benchmark arguments]}
shift
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
limit=${LIMIT_S:-200}
echo "gpu_check: $py, each benchmark at most $limit s (LIMIT_S)"
missing='import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("hydra", "omegaconf", "open_clip")))'
if ! $py -c "$missing" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  # what the machine lacks (hydra-core, omegaconf, open_clip_torch, wandb, umap-learn...), from fetch_wheels.sh
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $py -c "from importlib.metadata import version as v; print(*(f'{p} {v(p)}' for p in ('torch', 'transformers', 'lightning')))"
} | tee "$out/device.txt"
status=0
bench() {
  local name=$1
  shift
  local start=$SECONDS rc=0
  timeout "$limit" $py "benchmarks/$name.py" "$@" --out "$out/$name.json" > "$out/$name.log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    echo "== $name: $((SECONDS - start)) s"
  elif [ "$rc" = 124 ]; then
    echo "== $name FAILED: timed out after $limit s (LIMIT_S=<seconds> gives it longer; see $out/$name.log):"
    status=1
  else
    echo "== $name FAILED after $((SECONDS - start)) s, exit $rc (see $out/$name.log):"
    status=1
  fi
  grep -A8 "^[a-z].* on " "$out/$name.log" | grep -v "^\[" | tail -n 9
}
for name in ${BENCHMARKS:-vit_train resnet_train vae_train clip_embedding vit_analyses clip_train data_path resnet_folder}; do  # BENCHMARKS: a subset
  if [ "$name" = data_path ]; then
    # the data path alone: JPEGs made here (4,000 at 500x375), the plain ImageFolder+PIL loader, data=folder,
    # data=shards (if litdata is installed) with DATA_WORKERS decoding processes, and data=folder with
    # data.gpu_decode=true (nvJPEG batched on the GPU)
    bench "$name" --workers "${DATA_WORKERS:-8}" --images 4000 "$@"
  elif [ "$name" = resnet_folder ]; then
    # ResNet-152 at 224, batch 256, trained from ~9,000 JPEGs made here through data=folder (data.gpu_decode=true,
    # and =false with DATA_WORKERS decoding processes) against the compute-only bound: the goal is >= 0.9
    bench "$name" --arch resnet152 --image-size 224 --batch-size 256 --workers "${DATA_WORKERS:-8}" "$@"
  else
    bench "$name" "$@"
  fi
done
$py benchmarks/summarise.py "$out" | tee "$out/summary.md"
exit $status
