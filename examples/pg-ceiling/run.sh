#!/bin/bash
# PostgreSQL alone, doing the writes of Homing's sends: what the database
# can do on this machine with the thinnest client and nothing else running.
# Each run migrates a fresh database with Homing's migrations (like the
# load generator), seeds one sender and a recipient with two devices, and
# runs one of the scripts under pgbench. See BENCHMARKS.md.
#
#   examples/pg-ceiling/run.sh send.sql 1 8         # one session, 8 s
#   examples/pg-ceiling/run.sh federation.sql 2 8   # two sessions
#
# Messages per second = tps × 64 (send.sql) or × 100 (federation.sql).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
script=$1 clients=${2:-1} seconds=${3:-8}
host=${PGHOST:-127.0.0.1} user=${PGUSER:-postgres}
psql_run() { psql -q -h "$host" -U "$user" -v ON_ERROR_STOP=1 "$@"; }
psql_run -c "DROP DATABASE IF EXISTS homing_ceiling WITH (FORCE)" -c "CREATE DATABASE homing_ceiling" postgres
for migration in "$repo"/migrations/postgres/*/up.sql; do
    psql_run -f "$migration" homing_ceiling >/dev/null
done
psql_run -f "$here/seed.sql" homing_ceiling
# JIT would compile the generate_series statements (100 ms each): no
# statement of Homing's is costly enough to trigger it.
PGOPTIONS='-c jit=off' pgbench -h "$host" -U "$user" -n -M prepared \
    -f "$here/$script" -c "$clients" -T "$seconds" homing_ceiling
