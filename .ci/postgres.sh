#!/usr/bin/env bash
# A PostgreSQL server for the shared-MLflow-server test (tests/pipeline/test_tracking_server.py).
#
# Installs Debian's postgresql when missing (apt, as root), starts a private cluster
# owned by the `postgres` user in $FCA_PG_DIR on 127.0.0.1:$FCA_PG_PORT, creates the
# role and database the test uses, and prints ONE line on stdout: the connection URI.
# Everything else goes to stderr. Idempotent: a second call reuses the running cluster.
#
#   export FCA_TEST_POSTGRES_URI="$(bash .ci/postgres.sh)"
#   bash .ci/postgres.sh stop      # stops the cluster (the data folder stays)
set -euo pipefail

PG_DIR=${FCA_PG_DIR:-/tmp/fca-postgres}
PG_PORT=${FCA_PG_PORT:-55432}
DB=${FCA_PG_DB:-fca_mlflow_test}
DB_USER=${FCA_PG_USER:-fca}
DB_PASSWORD=${FCA_PG_PASSWORD:-fca}
say() { echo "postgres.sh: $*" >&2; }

pg_bin() {
    local v
    v=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n1)
    [[ -n "$v" && -x /usr/lib/postgresql/$v/bin/initdb ]] && echo "/usr/lib/postgresql/$v/bin"
}

BIN=$(pg_bin || true)
if [[ -z "$BIN" ]]; then
    [[ $(id -u) -eq 0 ]] || { say "PostgreSQL is not installed and this is not root: cannot apt-get install it"; exit 1; }
    say "installing Debian's postgresql (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # The package's own cluster may fail to start without an init system: we do not use it.
    apt-get install -y -qq --no-install-recommends postgresql >&2 || true
    BIN=$(pg_bin || true)
    [[ -n "$BIN" ]] || { say "apt-get install postgresql failed"; exit 1; }
fi

as_pg() { if [[ $(id -un) == postgres ]]; then "$@"; else runuser -u postgres -- "$@"; fi; }
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres

if [[ "${1:-}" == stop ]]; then
    as_pg "$BIN/pg_ctl" -D "$PG_DIR" -m fast stop >&2 || true
    exit 0
fi

mkdir -p "$PG_DIR"
chown postgres: "$PG_DIR"
chmod 700 "$PG_DIR"
if [[ ! -f "$PG_DIR/PG_VERSION" ]]; then
    say "initdb in $PG_DIR"
    as_pg "$BIN/initdb" -D "$PG_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >&2
fi
if ! as_pg "$BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
    say "starting PostgreSQL ($BIN) on 127.0.0.1:$PG_PORT"
    as_pg "$BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG_DIR" start >&2
fi

psql_su() { as_pg "$BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [[ -z $(psql_su -c "select 1 from pg_roles where rolname = '$DB_USER'") ]]; then
    psql_su -c "create role \"$DB_USER\" login password '$DB_PASSWORD'" >&2
fi
if [[ -z $(psql_su -c "select 1 from pg_database where datname = '$DB'") ]]; then
    psql_su -c "create database \"$DB\" owner \"$DB_USER\"" >&2
fi
say "ready: database $DB, user $DB_USER"
echo "postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB"
