#!/usr/bin/env bash
# Train the adversarially trained bundled checkpoints as two single-threaded chains in parallel
# (one per CPU core): chain A = PGD-AT then TRADES, chain B = SOAT. Epoch counts chosen so that
# everything finishes within ~1.5 hours on the 2-core machine (see README, "Bundled models").
# Usage: nohup scripts/train_adversarial_parallel.sh > runs/logs/train_adversarial.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p runs/logs
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

run() {  # run <model> <args...>: train with retries (--resume continues after a failure)
  local model=$1; shift
  for attempt in 1 2 3; do
    echo "=== $(date '+%F %T') $model attempt $attempt"
    if python -m soae_core.train --model "$model" "$@" --resume --no-progress > "runs/logs/$model.log" 2>&1; then
      echo "=== $(date '+%F %T') $model done"; tail -1 "runs/logs/$model.log"; return 0
    fi
    echo "=== $(date '+%F %T') $model failed:"; tail -5 "runs/logs/$model.log"; sleep 30
  done
}

(
  run fmnist-cnn-pgd --method pgd --epochs 4 --eps 0.1 --attack-steps 7
  run fmnist-cnn-trades --method trades --epochs 4 --eps 0.1 --attack-steps 7 --trades-beta 6
) &
(
  run fmnist-cnn-soat --method soat --epochs 3 --train-subset 30000 --eps 0.1 --soae-steps 1 \
      --soae-hvp exact --soae-max-krylov 10 --soae-step-rule sign
) &
wait
