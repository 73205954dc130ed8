#!/usr/bin/env bash
# Train the standard bundled Fashion-MNIST checkpoints one after another (2 CPU cores: never in
# parallel). The adversarially trained ones (pgd, trades, soat) come from
# scripts/train_adversarial_parallel.sh; every card records the exact command that produced it.
# Usage: setsid nohup scripts/train_bundled_models.sh [model ...] > runs/logs/train_bundled.log 2>&1 &
# Each run checkpoints every epoch; a failed or killed run is retried with --resume.
set -u
# Optional: wait for a training process started earlier (WAIT_PID) to finish first.
if [ -n "${WAIT_PID:-}" ]; then while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 10; done; fi
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p runs/logs

declare -A ARGS=(
  [fmnist-cnn-std]="--method std --epochs 6"
  [fmnist-cnn-smooth-std]="--method std --epochs 12"
)
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(fmnist-cnn-std fmnist-cnn-smooth-std)

for model in "${MODELS[@]}"; do
  for attempt in 1 2 3; do
    echo "=== $(date '+%F %T') $model attempt $attempt"
    # shellcheck disable=SC2086
    if python -m soae_core.train --model "$model" ${ARGS[$model]} --resume --no-progress \
        >> "runs/logs/$model.log" 2>&1; then
      echo "=== $(date '+%F %T') $model done"; tail -1 "runs/logs/$model.log"; break
    fi
    echo "=== $(date '+%F %T') $model failed:"; tail -5 "runs/logs/$model.log"; sleep 60
  done
done
