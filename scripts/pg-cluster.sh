#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests and benchmarks, in a temporary directory, run by an
# unprivileged user. Installs PostgreSQL from Debian's packages where it is missing.
#
#   scripts/pg-cluster.sh start        prints `export POLYPHONY_TEST_PG=... POLYPHONY_PG_DIR=...`
#                                      (eval it); the cluster listens on 127.0.0.1 and a socket in
#                                      its directory, at a free port
#   scripts/pg-cluster.sh stop DIR     stops the cluster in DIR and deletes DIR
#   scripts/pg-cluster.sh crash DIR    kills every process of the cluster at once (immediate stop:
#                                      no checkpoint; what was only in its memory is gone)
#   scripts/pg-cluster.sh restart DIR  starts the cluster in DIR again (recovering from its log)
#
# The cluster is set up as production needs it for "saved" to mean saved (fsync on,
# synchronous_commit on), not for speed. Its one role, `polyphony`, is trusted on loopback only:
# never point a real server at it.
set -euo pipefail

find_bin() {
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$newest" ] && [ -x "$newest/initdb" ]; then
        echo "$newest"
    fi
}

# Run a PostgreSQL program as the cluster's owner: initdb and postgres refuse to run as root.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local bin
    bin=$(find_bin)
    if [ -z "$bin" ]; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            echo "pg-cluster: PostgreSQL is not installed and cannot be installed here (needs root and apt-get): install Debian's 'postgresql' package" >&2
            exit 3
        fi
        echo "pg-cluster: installing PostgreSQL from Debian's packages" >&2
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
        bin=$(find_bin)
        [ -n "$bin" ] || { echo "pg-cluster: PostgreSQL installed but initdb not found" >&2; exit 3; }
    fi
    local dir
    dir=$(mktemp -d /tmp/polyphony-pg.XXXXXX)
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
        chown postgres: "$dir"
        chmod 0755 "$dir"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U polyphony -A trust --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    local port started=""
    for _ in 1 2 3; do
        port=$(free_port)
        cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = on
synchronous_commit = on
EOF
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >&2; then
            started=1
            break
        fi
    done
    [ -n "$started" ] || { echo "pg-cluster: the cluster did not start; its log:" >&2; cat "$dir/log" >&2; exit 1; }
    as_owner "$bin/createdb" -h "$dir" -p "$port" -U polyphony polyphony
    echo "export POLYPHONY_TEST_PG='host=127.0.0.1 port=$port user=polyphony dbname=polyphony' POLYPHONY_PG_DIR='$dir'"
}

stop() {
    local dir=${1:-}
    check_dir "$dir"
    local bin
    bin=$(find_bin)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$dir"
}

check_dir() {
    case "${1:-}" in
        /tmp/polyphony-pg.*) ;;
        *) echo "pg-cluster: '${1:-}' is not a cluster this script made" >&2; exit 2 ;;
    esac
}

crash() {
    check_dir "${1:-}"
    as_owner "$(find_bin)/pg_ctl" -D "$1/data" -m immediate -w stop >&2
}

restart() {
    check_dir "${1:-}"
    as_owner "$(find_bin)/pg_ctl" -D "$1/data" -l "$1/log" -w -t 60 start >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    crash) crash "${2:-}" ;;
    restart) restart "${2:-}" ;;
    *) echo "usage: $0 start | stop DIR | crash DIR | restart DIR" >&2; exit 2 ;;
esac
