#!/usr/bin/env bash
# Look at TensorBoard as a user does: start it on a log folder, let headless Chromium (Debian's
# `chromium`) take a screenshot of each tab, stop it. Open the PNGs.
#   bash scripts/tensorboard_screenshots.sh logs/vae shots/    # one task's runs (the README's layout)
# Tabs: time series, scalars, images, HParams (table view). Needs `chromium` (apt-get install chromium).
set -euo pipefail
LOGDIR=${1:?usage: tensorboard_screenshots.sh LOGDIR OUTDIR}
OUT=${2:?usage: tensorboard_screenshots.sh LOGDIR OUTDIR}
PORT=${PORT:-16006}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TB=${TENSORBOARD:-$HERE/.venv/bin/tensorboard}
command -v chromium >/dev/null || { echo "error: chromium not found (apt-get install -y chromium)" >&2; exit 2; }
mkdir -p "$OUT"
"$TB" --logdir "$LOGDIR" --port "$PORT" --host 127.0.0.1 >"$OUT/tensorboard.log" 2>&1 &
TB_PID=$!
trap 'kill $TB_PID 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 1; done
for tab in timeseries scalars images hparams; do
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1100 \
    --virtual-time-budget=20000 --screenshot="$OUT/$tab.png" "http://127.0.0.1:$PORT/#$tab" >/dev/null 2>&1
  echo "$OUT/$tab.png"
done
