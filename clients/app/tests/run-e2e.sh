#!/usr/bin/env bash
# The app's browser tests: set up (npm packages, Chromium), build the server and the app, run the
# home-visit scenario in headless Chromium with axe-core on every page. Screenshots are written to
# clients/app/tests/screenshots/ (not committed). Called by the repository's .ci/run.
set -euo pipefail
app="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$app/../.." && pwd)"

"$app/setup.sh"
(cd "$repo" && cargo build -p polyphony-server -p polyphony-app)
rm -rf "$app/tests/screenshots"
cd "$app"
node --test --test-concurrency=1 --test-timeout=1800000 tests/e2e/visit.test.mjs
echo "screenshots: $app/tests/screenshots/"
