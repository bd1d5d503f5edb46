#!/usr/bin/env bash
# The main job: set up, make sure Fashion-MNIST is present, train LeNet-5 on the CPU.
# Extra arguments go to `python -m tinygrad_k train` (e.g. --epochs 1 --model mlp).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh plot
FMNIST=/usr/share/datasets/fashion-mnist
if [ -z "${FASHION_MNIST_DIR:-}" ] && [ -z "${TINYGRAD_K_DATA:-}" ] && [ ! -e "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    echo "[train] Fashion-MNIST not found: installing the Debian package dataset-fashion-mnist"
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist \
      || echo "[train] could not install dataset-fashion-mnist; set FASHION_MNIST_DIR to a folder with the idx files"
  else
    echo "[train] Fashion-MNIST not found and no apt-get: set FASHION_MNIST_DIR to a folder with the idx files"
  fi
fi
# the words of the character-level language models (--model char_transformer --dataset words)
bash scripts/words.sh
exec .venv/bin/python -m tinygrad_k train --model lenet5 --dataset fashion-mnist --epochs 3 --out runs/lenet5 "$@"
