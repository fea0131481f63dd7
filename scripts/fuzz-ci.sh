#!/usr/bin/env bash
# Bounded fuzzing for CI: build the cargo-fuzz targets in fuzz/ and run each one for
# FUZZ_SECONDS (default 60) from its seed corpus; fail on any crash, panic, leak or hang.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler. cargo-fuzz needs
# nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# New inputs the fuzzer finds go to a temporary directory, so the repository's seed corpus is
# only read. A crash leaves its input in fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
#
# Time on the 2-core CI machine: about 8 minutes to build from scratch (release, AddressSanitizer),
# then FUZZ_SECONDS per target.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-60}"
targets=(frame_decoder client_session document_load server_session)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

started=$(date +%s)
cargo fuzz build
built=$(date +%s)
echo "fuzz targets built in $((built - started)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for target in "${targets[@]}"; do
    mkdir -p "$work/$target"
    log="$work/$target.log"
    if cargo fuzz run "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        echo "FUZZ $target seconds=$seconds runs=${runs:-?} crashes=0"
    else
        failed=1
        echo "FUZZ $target FAILED: the input is in fuzz/artifacts/$target/" >&2
        tail -n 60 "$log" >&2
    fi
done
echo "fuzzing took $(($(date +%s) - started)) s in all"
exit "$failed"
