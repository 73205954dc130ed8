#!/usr/bin/env bash
# The README's "your own weights" round trip, recorded: train a small model with the training CLI,
# then load its output as the app's upload does (and once for the wrong architecture).
# Usage: scripts/own_weights_roundtrip.sh > bench/results/own_weights_roundtrip.txt 2>&1
set -u
cd "$(dirname "$0")/.."
work=$(mktemp -d)
run() { echo "\$ $*"; "$@"; echo "(exit status $?)"; echo; }
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
run python -m soae_core.train --model fmnist-cnn-std --epochs 1 --train-subset 6000 --eval-pgd-n 100 \
    --eval-soae-n 20 --no-progress --out-dir "$work/my_weights" --checkpoint-dir "$work/checkpoints"
run python scripts/own_weights_roundtrip.py "$work/my_weights/fmnist-cnn-std.safetensors" small-cnn
run python scripts/own_weights_roundtrip.py "$work/my_weights/fmnist-cnn-std.safetensors" small-cnn-smooth
rm -rf "$work"
