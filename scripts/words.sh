#!/usr/bin/env bash
# The word list of the character-level language models (/usr/share/dict/words, Debian's
# wamerican), installed where it is missing and apt-get can; called by train.sh and
# test.sh (tests/test_charlm.py compares the models on it). Never fails: without it the
# models take $TINYGRAD_K_WORDS, and the tests say what they skipped.
if [ -n "${TINYGRAD_K_WORDS:-}" ] || [ -e /usr/share/dict/words ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "[words] /usr/share/dict/words not found: installing the Debian package wamerican"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wamerican \
    || { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wamerican; } \
    || echo "[words] could not install wamerican; set TINYGRAD_K_WORDS to any text file"
else
  echo "[words] /usr/share/dict/words not found and no apt-get: set TINYGRAD_K_WORDS to a text file"
fi
exit 0
