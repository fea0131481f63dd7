#!/usr/bin/env bash
# Install the automerge-repo peer from npm (exact versions, from package-lock.json) and run one
# workload against it, printing a JSON line. Same arguments as driver.mjs, e.g.
#   automerge-repo-peer/run.sh first-sync --cases 1000
#   automerge-repo-peer/run.sh reconnect --cases 1000 --edited 100
#   automerge-repo-peer/run.sh morning --devices 200 --cases 20 --edited 5
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/@automerge/automerge-repo ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
exec node driver.mjs "$@"
