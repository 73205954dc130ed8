#!/usr/bin/env bash
# A fairer SOAT (issue 12, item 6): SOAT whose inner attack matches PGD-AT's — 7 SOAE sign steps of
# α/N = 0.025 (= PGD-AT's 7 steps of 0.025 at ε = 0.1, total α = 0.175), random start, exact products,
# ≤ 10 Krylov steps — beside PGD-AT and the 1-step SOAT of the bundled model, all three trained with the
# SAME reduced budget (first $SUBSET training images × $EPOCHS epochs, seed 0, Adam, cosine schedule),
# then evaluated on the first $N test images at ε = 8/255 and 0.1.
#
#   bash bench/fair_soat.sh soat7 | pgd | soat1 | eval-soat7 | eval-pgd-soat1      (one step each)
#
# Outputs under runs/fair-soat/ (weights, cards, evaluation reports). ATTACKS chooses the eval steps'
# attacks and EVAL_NAME their output folder (default: the step's name), e.g. the attacks a first
# eval left out:  ATTACKS="SOAE ASOD" EVAL_NAME=eval-soat7-soae-asod bash bench/fair_soat.sh eval-soat7
set -euo pipefail
SUBSET=${SUBSET:-8000}
EPOCHS=${EPOCHS:-2}
N=${N:-500}
ATTACKS=${ATTACKS:-FGSM PGD AutoAttack ASOD SOAE SOAE-g}
EVAL_NAME=${EVAL_NAME:-${1:-}}
OUT=runs/fair-soat
PY=.venv/bin/python
COMMON=(--epochs "$EPOCHS" --train-subset "$SUBSET" --eps 0.1 --seed 0 --resume --no-progress --threads 1
        --eval-pgd-n 500 --eval-soae-n 100)
EVAL=(--eps 8/255 0.1 --n "$N" --batch-size 500 --threads 1 --jobs 1 --quiet)
case "$1" in
  soat7) $PY -m soae_core.train --model fmnist-cnn-soat --method soat --soae-steps 7 --soae-alpha 0.175 \
           --soae-hvp exact --soae-max-krylov 10 --soae-step-rule sign "${COMMON[@]}" \
           --checkpoint-dir $OUT/soat7/checkpoints --out-dir $OUT/soat7 ;;
  soat1) $PY -m soae_core.train --model fmnist-cnn-soat --method soat --soae-steps 1 \
           --soae-hvp exact --soae-max-krylov 10 --soae-step-rule sign "${COMMON[@]}" \
           --checkpoint-dir $OUT/soat1/checkpoints --out-dir $OUT/soat1 ;;
  pgd)   $PY -m soae_core.train --model fmnist-cnn-pgd --method pgd --attack-steps 7 "${COMMON[@]}" \
           --checkpoint-dir $OUT/pgd/checkpoints --out-dir $OUT/pgd ;;
  eval-soat7) $PY -m soae_core.evaluate --models fmnist-cnn-soat --attacks $ATTACKS "${EVAL[@]}" \
           --weights fmnist-cnn-soat=$OUT/soat7/fmnist-cnn-soat.safetensors --out "$OUT/$EVAL_NAME" ;;
  eval-pgd-soat1) $PY -m soae_core.evaluate --models fmnist-cnn-pgd fmnist-cnn-soat --attacks $ATTACKS "${EVAL[@]}" \
           --weights fmnist-cnn-pgd=$OUT/pgd/fmnist-cnn-pgd.safetensors \
           fmnist-cnn-soat=$OUT/soat1/fmnist-cnn-soat.safetensors --out "$OUT/$EVAL_NAME" ;;
  *) echo "usage: bash bench/fair_soat.sh soat7|soat1|pgd|eval-soat7|eval-pgd-soat1" >&2; exit 2 ;;
esac
