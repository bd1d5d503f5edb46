#!/usr/bin/env bash
# The real data, installed from Debian's packages where it is missing and apt-get can:
# Fashion-MNIST (dataset-fashion-mnist: LeNet-5's training, and the tests that train on
# it) and the word list (wamerican: the character-level language models, and the test
# that compares them). Called by train.sh and test.sh. Never fails: without a package
# the variables below point elsewhere, and the tests say what they skipped.
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"

install() {  # install PACKAGE WHAT HINT
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[data] $2 not found and no apt-get: $3"
    return 0
  fi
  echo "[data] $2 not found: installing the Debian package $1"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" \
    || { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1"; } \
    || echo "[data] could not install $1; $3"
}

if [ -z "${FASHION_MNIST_DIR:-}" ] && [ -z "${TINYGRAD_K_DATA:-}" ] \
    && [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  install dataset-fashion-mnist Fashion-MNIST \
    "set FASHION_MNIST_DIR to a folder with the four idx files"
fi
if [ -z "${TINYGRAD_K_WORDS:-}" ] && [ ! -e /usr/share/dict/words ]; then
  install wamerican /usr/share/dict/words "set TINYGRAD_K_WORDS to any text file"
fi
exit 0
