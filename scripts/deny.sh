#!/usr/bin/env bash
# Licences, bans, sources and advisories of every dependency (cargo-deny, deny.toml), offline,
# against the RustSec advisory snapshot the project is given beside the repository
# (../shared/advisory-db; POLYPHONY_ADVISORY_DB to use another). Nothing is fetched: cargo-deny
# expects its database as a git repository named after the default URL, so the snapshot is
# copied into target/advisory-dbs and committed there (never into this repository).
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot="${POLYPHONY_ADVISORY_DB:-../shared/advisory-db}"
if [ ! -d "$snapshot/crates" ]; then
    echo "no RustSec advisory snapshot at $snapshot: set POLYPHONY_ADVISORY_DB" >&2
    exit 2
fi
if ! cargo deny --version >/dev/null 2>&1; then
    echo "installing cargo-deny (once, about 4 minutes)"
    cargo install cargo-deny --locked --version 0.20.2
fi

db=target/advisory-dbs/advisory-db-3157b0e258782691
stamp="$(cat "$snapshot/SNAPSHOT" 2>/dev/null || echo unknown)"
if [ ! -f "$db/.polyphony-snapshot" ] || [ "$(cat "$db/.polyphony-snapshot")" != "$stamp" ]; then
    rm -rf "$db"
    mkdir -p "$db"
    cp -R "$snapshot"/. "$db"/
    chmod -R u+w "$db"
    rm -rf "$db/.git"
    printf '%s' "$stamp" > "$db/.polyphony-snapshot"
    git -C "$db" init -q
    git -C "$db" add -A
    git -C "$db" -c user.name=polyphony -c user.email=ci@localhost commit -qm "advisory snapshot"
fi
cargo fetch --locked >/dev/null
cargo deny --offline check
