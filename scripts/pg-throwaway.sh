#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 cluster on loopback for the tests and
# exports TEST_DATABASE_URL. Source it: `source scripts/pg-throwaway.sh`.
# The cluster lives in a temporary directory and is stopped on exit.
# initdb refuses to run as root, so as root the cluster runs as the
# `postgres` system user (created by Debian's package) or `nobody`.

find_pg_bin() {
  for d in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin; do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
  done
  return 1
}

PG_BIN=$(find_pg_bin || true)
if [ -z "$PG_BIN" ]; then
  echo "pg-throwaway: no PostgreSQL server binaries; installing postgresql from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  PG_BIN=$(find_pg_bin)
fi

PG_USER=$(id -un)
if [ "$(id -u)" = 0 ]; then
  if id postgres >/dev/null 2>&1; then PG_USER=postgres; else PG_USER=nobody; fi
fi
as_pg() {
  if [ "$(id -u)" = 0 ]; then su -s /bin/sh "$PG_USER" -c "$*"; else sh -c "$*"; fi
}

PG_DIR=$(mktemp -d /tmp/pg-throwaway.XXXXXX)
chmod 755 "$PG_DIR"
chown "$PG_USER" "$PG_DIR"
PG_PORT=${PG_PORT:-$(( 20000 + RANDOM % 20000 ))}
as_pg "'$PG_BIN/initdb' -D '$PG_DIR/data' -U gateway --auth=trust -E UTF8 --no-locale" >"$PG_DIR/initdb.log" 2>&1 \
  || { cat "$PG_DIR/initdb.log" >&2; return 1 2>/dev/null || exit 1; }
# fsync off: this cluster is thrown away; tests check semantics, not power loss.
as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c shared_buffers=256MB\" start" >/dev/null \
  || { cat "$PG_DIR/server.log" >&2; return 1 2>/dev/null || exit 1; }

pg_throwaway_stop() {
  as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap pg_throwaway_stop EXIT

# The subscription tests restart the cluster once (see scripts/test.sh).
cat >"$PG_DIR/restart.sh" <<RESTART
#!/bin/sh
cd /
if [ "\$(id -u)" = 0 ]; then
  exec su -s /bin/sh "$PG_USER" -c "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -w -m fast restart >/dev/null"
fi
exec '$PG_BIN/pg_ctl' -D '$PG_DIR/data' -w -m fast restart >/dev/null
RESTART
chmod 755 "$PG_DIR/restart.sh"
export TEST_PG_RESTART="$PG_DIR/restart.sh"

export PG_BIN PG_DIR PG_PORT PG_USER
export TEST_DATABASE_URL="postgres://gateway@127.0.0.1:$PG_PORT/postgres"
echo "pg-throwaway: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on port $PG_PORT ($PG_DIR)" >&2
