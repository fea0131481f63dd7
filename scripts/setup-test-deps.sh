#!/usr/bin/env bash
# Debian packages the Rust test suite needs, installed only where missing (scripts/test runs this
# before `cargo test`; safe to run again). Where it cannot install (not root, no apt-get), it says
# so and carries on: the tests that need a package print `SKIPPED: <why>` instead.
#
# - fuse3: `fusermount3`, which mounts the power-loss test's FUSE filesystem
#   (tests/src/powerfs.rs) for a non-root user; as root the test mounts through /dev/fuse directly.
# - util-linux and mount: `unshare`, `nsenter` and `mount`, with which the real full-disk test
#   (tests/tests/faults.rs) mounts a small tmpfs in a private mount namespace.
set -euo pipefail

missing=()
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
{ command -v unshare && command -v nsenter; } >/dev/null 2>&1 || missing+=(util-linux)
command -v mount >/dev/null 2>&1 || missing+=(mount)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-test-deps: cannot install ${missing[*]} here (needs root and apt-get); the tests that need it will say SKIPPED" >&2
    exit 0
fi
echo "setup-test-deps: installing ${missing[*]}" >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
