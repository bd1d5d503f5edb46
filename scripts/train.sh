#!/usr/bin/env bash
# The main job: set up, make sure Fashion-MNIST is present, train LeNet-5 on the CPU.
# Extra arguments go to `python -m tinygrad_k train` (e.g. --epochs 1 --model mlp).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh plot
bash scripts/data.sh  # Fashion-MNIST and the word list, where missing
exec .venv/bin/python -m tinygrad_k train --model lenet5 --dataset fashion-mnist --epochs 3 --out runs/lenet5 "$@"
