#!/usr/bin/env bash
# The vit task's GPU check, as run on the lent H100 (no hub there either): the benchmark, then the
# whole task on CIFAR-10-shaped synthetic data with a ViT-B/16 of the real shape and ImageNet label
# names (random weights), through the CIFAR-10 preset's class map.
#   bash benchmarks/vit_gpu_check.sh OUTDIR      (PYTHONPATH must reach src/ and hydra-core)
set -uo pipefail
out=${1:-/tmp/vit_gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, transformers, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'lightning', lightning.__version__)" | tee -a "$out/device.txt"
python3 benchmarks/vit_attention.py --images 512 --batch-size 64 2>&1 | grep -v -e "Loading weights" -e "Writing model" | tee "$out/benchmark.txt"
python3 - <<'PY'
from torchvision.models._meta import _IMAGENET_CATEGORIES
from transformers import ViTConfig, ViTForImageClassification
cfg = ViTConfig(id2label=dict(enumerate(_IMAGENET_CATEGORIES)), label2id={c: i for i, c in enumerate(_IMAGENET_CATEGORIES)})
ViTForImageClassification(cfg).save_pretrained("/tmp/vit-b16-random")
PY
start=$(date +%s)
python3 -m experiments experiment=vit_cifar10 trainer=gpu logger=csv paths.log_dir=/tmp/vitlogs model.name=/tmp/vit-b16-random \
  data.synthetic=true data.synthetic_size=2048 data.eval_batch_size=64 callbacks.attention_maps.max_images=1024 callbacks.attention_rollout.max_images=1024 callbacks.patch_masking.max_images=1024 trainer.enable_progress_bar=false \
  > "$out/task.log" 2>&1
echo "task exit $? in $(( $(date +%s) - start )) s" | tee -a "$out/task.log"
run=$(ls -d /tmp/vitlogs/vit/runs/* | head -1)
cp "$run/metrics.json" "$out/" 2>/dev/null
cp "$run/figures/masking_deletion_curves.png" "$run/figures/rollout_maps.png" "$out/" 2>/dev/null
tail -5 "$out/task.log"
