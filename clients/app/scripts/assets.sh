#!/usr/bin/env bash
# Install the NHS design system's styles and icons that the app compiles into its binary.
#
# They are third-party files (nhsuk-frontend, MIT), so the repository does not hold them: this
# installs the npm package at the version pinned in package-lock.json (`npm ci` checks the
# tarball against the lock's sha512 integrity), checks the installed version is the pinned one,
# and prepares the files into assets/nhsuk/ with scripts/prepare-nhsuk.mjs (fonts loaded from an
# NHS host removed; nothing external left). The app's build script stops with the command to run
# when they are missing. scripts/test and the README run this first. Idempotent; needs node/npm.
set -euo pipefail
cd "$(dirname "$0")/.."

version_in() { node -p "JSON.parse(require('fs').readFileSync('$1', 'utf8'))$2"; }

pinned=$(version_in package-lock.json ".packages['node_modules/nhsuk-frontend'].version")
# Up to date: the pinned version prepared after the lock and the script last changed, and every
# file the build embeds (build.rs lists the same) in place.
current=yes
for f in VERSION nhsuk-frontend.min.css LICENSE images/favicon.svg images/nhsuk-icon-arrow-down.svg \
    images/nhsuk-icon-arrow-up.svg images/nhsuk-icon-arrow-up-down.svg images/nhsuk-icon-cross.svg; do
    [ -f "assets/nhsuk/$f" ] || current=no
done
if [ "$current" = yes ] && [ "$(cat assets/nhsuk/VERSION)" = "$pinned" ] \
    && [ assets/nhsuk/VERSION -nt package-lock.json ] \
    && [ assets/nhsuk/VERSION -nt scripts/prepare-nhsuk.mjs ]; then
    exit 0
fi

if [ ! -d node_modules/nhsuk-frontend ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    n=1
    until npm ci --no-audit --no-fund --loglevel=error; do
        if [ "$n" -ge 3 ]; then echo "assets: npm ci failed $n times" >&2; exit 1; fi
        echo "assets: npm ci failed; retrying in $((n * 10)) s" >&2
        sleep $((n * 10)); n=$((n + 1))
    done
fi
installed=$(version_in node_modules/nhsuk-frontend/package.json ".version")
if [ "$installed" != "$pinned" ]; then
    echo "assets: nhsuk-frontend $installed is installed, the lock pins $pinned: run npm ci in clients/app" >&2
    exit 1
fi
node scripts/prepare-nhsuk.mjs
