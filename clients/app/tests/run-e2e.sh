#!/usr/bin/env bash
# The app's browser tests: set up (npm packages, Chromium), build the server and the app, run the
# home-visit scenario in headless Chromium with axe-core on every page, and check that a page served
# from another local port cannot use the app's session, and that a killed and restarted app loses
# nothing a practitioner typed. Screenshots are written to
# clients/app/tests/screenshots/ (not committed). Called by the repository's .ci/run.
set -euo pipefail
app="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$app/../.." && pwd)"

"$app/setup.sh"
(cd "$repo" && cargo build -p polyphony-server -p polyphony-app)
cd "$app"
# One scenario, driven through real processes on a two-core machine that CI shares with builds:
# a failed run is tried once more (E2E_ATTEMPTS), and says so loudly, before it fails the build.
attempts="${E2E_ATTEMPTS:-2}"
for attempt in $(seq 1 "$attempts"); do
  rm -rf "$app/tests/screenshots"
  if node --test --test-concurrency=1 --test-timeout=1800000 tests/e2e/another-port.test.mjs tests/e2e/app-stops.test.mjs tests/e2e/visit.test.mjs; then
    echo "screenshots: $app/tests/screenshots/"
    exit 0
  fi
  echo "run-e2e: attempt $attempt of $attempts FAILED" >&2
done
exit 1
