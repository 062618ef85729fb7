#!/usr/bin/env bash
# Installs Debian's chromium for the marketplace's headless-browser tests
# (marketplace/browser_test.go), unless a Chromium-family browser is already
# on PATH. Idempotent and quiet; prints one line.
set -euo pipefail
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$b" >/dev/null 2>&1; then
    echo "chromium: $(command -v "$b")"
    exit 0
  fi
done
export DEBIAN_FRONTEND=noninteractive
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium: installed $(command -v chromium)"
