#!/usr/bin/env bash
# Run every workload against our server and against the automerge-repo peer, one after the other in
# the same run on the same machine, appending one JSON line per result to $1 (default
# bench-results.jsonl). Build first: cargo build --release -p polyphony-bench -p polyphony-server
#   benches/peer/compare.sh /tmp/results.jsonl            # A, B, C, then A at 5,000
#   WITH_D=1 benches/peer/compare.sh /tmp/results.jsonl   # and D (50,000 cases; about 20 minutes)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(realpath -m "${1:-bench-results.jsonl}")"
load="$root/target/release/polyphony-load"
peer="$here/run.sh"

ours() { echo "+ polyphony-load $*" >&2; "$load" --json-out "$out" "$@" >/dev/null; }
theirs() { echo "+ benches/peer/run.sh $*" >&2; "$peer" "$@" >>"$out"; }

for n in 200 1000; do
  ours first-sync --cases "$n"
  theirs first-sync --cases "$n"
done
ours reconnect --cases 1000 --edited 100
theirs reconnect --cases 1000 --edited 100
ours morning --devices 200 --cases 20 --edited 5
theirs morning --devices 200 --cases 20 --edited 5
ours first-sync --cases 5000
theirs first-sync --cases 5000
if [ "${WITH_D:-0}" = 1 ]; then
  ours memory --cases 50000
fi
