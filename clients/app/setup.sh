#!/usr/bin/env bash
# Set up what the app's browser tests need, on a fresh machine as on CI:
# - the npm packages pinned in package-lock.json (playwright-core, axe-core, nhsuk-frontend, whose
#   styles scripts/assets.sh prepares for the build);
# - Debian's Chromium (Playwright's own browser download does not work here and is not used).
# Idempotent; network steps are retried a bounded number of times.
set -euo pipefail
cd "$(dirname "$0")"

retry() {
  local n=1
  until "$@"; do
    if [ "$n" -ge 3 ]; then echo "setup: '$*' failed $n times" >&2; return 1; fi
    echo "setup: '$*' failed; retrying in $((n * 10)) s" >&2
    sleep $((n * 10)); n=$((n + 1))
  done
}

if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: Chromium is missing; install it as root: apt-get install -y chromium" >&2
    exit 1
  fi
  retry apt-get update -qq
  retry env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  retry npm ci --no-audit --no-fund --loglevel=error
fi
echo "setup: $("${CHROMIUM_PATH:-/usr/bin/chromium}" --version 2>/dev/null | head -1); node $(node --version)"
