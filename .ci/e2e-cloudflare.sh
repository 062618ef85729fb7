#!/usr/bin/env bash
# The Cloudflare dispatch worker in the real Workers runtime (workerd, via
# miniflare from npm, pinned by the committed lockfile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash adapters/cloudflare/worker/test/run.sh
