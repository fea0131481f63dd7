#!/usr/bin/env bash
# Run every workload against our server and against the automerge-repo peer, one after the other in
# the same run on the same machine, appending one JSON line per result to $1 (default
# bench-results.jsonl). Build first: cargo build --release -p polyphony-load -p polyphony-server
#   automerge-repo-peer/compare.sh /tmp/results.jsonl            # A, B, C, then A at 5,000
#   WITH_D=1 automerge-repo-peer/compare.sh /tmp/results.jsonl   # and D (50,000 cases; about 20 minutes)
#   STEPS="b c" automerge-repo-peer/compare.sh /tmp/results.jsonl # only some steps (a200 a1000 b c a5000)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="$(realpath -m "${1:-bench-results.jsonl}")"
load="$root/target/release/polyphony-load"
peer="$here/run.sh"

# A failure of either side is recorded as a result (and the run goes on): a server that falls over
# under a workload is a finding.
ours() {
  echo "+ polyphony-load $*" >&2
  "$load" --json-out "$out" "$@" >/dev/null || fail polyphony "$@"
}
theirs() {
  echo "+ automerge-repo-peer/run.sh $*" >&2
  "$peer" "$@" >>"$out" || fail automerge-repo "$@"
}
fail() {
  local impl="$1"
  shift
  printf '{"impl":"%s","failed":true,"command":"%s","at":"%s"}\n' "$impl" "$*" "$(date -Is)" >>"$out"
}

steps="${STEPS:-a200 a1000 b c a5000}"
has() { [[ " $steps " == *" $1 "* ]]; }
for n in 200 1000; do
  has "a$n" || continue
  ours first-sync --cases "$n"
  theirs first-sync --cases "$n"
done
if has b; then
  ours reconnect --cases 1000 --edited 100
  theirs reconnect --cases 1000 --edited 100
fi
if has c; then
  ours morning --devices 200 --cases 20 --edited 5
  theirs morning --devices 200 --cases 20 --edited 5
fi
if has a5000; then
  ours first-sync --cases 5000
  theirs first-sync --cases 5000
fi
if [ "${WITH_D:-0}" = 1 ]; then
  ours memory --cases 50000
fi
