#!/usr/bin/env bash
# Baseline for figure 1 (bench/noop.py): the init-container entrypoint the seeds ship today, run
# before every app pod starts. Wait for PostgreSQL, create aerich's tracking table by hand
# (`aerich init-db` refuses to run when the migrations folder already exists, as it does in an
# image), then `aerich upgrade`. Reads DB_HOST, DB_PORT, DB_USER, DB_PASS, DB_NAME and
# DATABASE_URL; run it from the app directory (where pyproject.toml is).
set -euo pipefail
export PGPASSWORD="$DB_PASS"
until pg_isready -q -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d "$DB_NAME"; do
  echo "waiting for postgres at $DB_HOST:$DB_PORT"
  sleep 1
done
until psql -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d "$DB_NAME" -c 'select 1' >/dev/null; do
  sleep 1
done
python "$(dirname "$0")/create_aerich_table.py" "${TORTOISE_CONFIG:-shop.config.TORTOISE_ORM}"
exec aerich upgrade
