#!/usr/bin/env bash
# Usage: infrastructure/messenger-db-deploy.sh
# Starts PostgreSQL 15 for messenger on the platform network, creates the migrator (superuser)
# and application (login only; `migrate` grants it data access) users, and writes the
# connection keys to Consul KV (CONSUL_HTTP_ADDR, default http://localhost:8500) for the other
# deploy scripts. Passwords come from MESSENGER_DB_MIGRATOR_PASSWORD and
# MESSENGER_DB_APPLICATION_PASSWORD, or are generated.
set -euo pipefail

# Plain configuration.
POSTGRES_IMAGE="postgres:15.8-bookworm"
CONTAINER_NAME="messenger-db"
NETWORK="messenger"
VOLUME="messenger-db-data"
DB_HOST="$CONTAINER_NAME" # the name the other containers reach it by on NETWORK
DB_PORT=5432
DATABASE="messenger"
MIGRATOR_USER="messenger_migrator"
APPLICATION_USER="messenger"
READY_TIMEOUT=60 # seconds

# shellcheck source=infrastructure/deploy-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"

[ $# -eq 0 ] || usage 8 "$1"

require_consul messenger-db-host
if [ -n "$(docker ps -aq --filter "name=^/${CONTAINER_NAME}$")" ]; then
  die "a container named ${CONTAINER_NAME} exists already; remove it first (docker rm -f ${CONTAINER_NAME})"
fi

generate_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
export POSTGRES_PASSWORD="${MESSENGER_DB_MIGRATOR_PASSWORD:-$(generate_password)}"
export APP_DB_PASSWORD="${MESSENGER_DB_APPLICATION_PASSWORD:-$(generate_password)}"

ensure_network "$NETWORK"
log "starting ${POSTGRES_IMAGE} as ${CONTAINER_NAME}"
# Secrets are passed as `-e NAME` (value from this environment), never on the command line.
docker run -d \
  --name "$CONTAINER_NAME" \
  --network "$NETWORK" \
  --restart unless-stopped \
  --volume "${VOLUME}:/var/lib/postgresql/data" \
  -e POSTGRES_USER="$MIGRATOR_USER" \
  -e POSTGRES_PASSWORD \
  -e POSTGRES_DB="$DATABASE" \
  --health-cmd "pg_isready -q -h 127.0.0.1 -U ${MIGRATOR_USER} -d ${DATABASE}" \
  --health-interval 5s \
  "$POSTGRES_IMAGE" >/dev/null

# Over TCP, so the image's first-start temporary server (socket only) does not count as ready.
log "waiting for PostgreSQL"
for ((waited = 0; ; waited++)); do
  docker exec "$CONTAINER_NAME" pg_isready -q -h 127.0.0.1 -U "$MIGRATOR_USER" -d "$DATABASE" && break
  [ "$waited" -lt "$READY_TIMEOUT" ] || die "PostgreSQL did not become ready in ${READY_TIMEOUT}s"
  sleep 1
done

log "creating the application user ${APPLICATION_USER}"
docker exec -i -e APP_DB_PASSWORD "$CONTAINER_NAME" sh -c \
  'psql -q -v ON_ERROR_STOP=1 -U "$1" -d "$2" -v app_user="$3" -v app_password="$APP_DB_PASSWORD"' \
  sh "$MIGRATOR_USER" "$DATABASE" "$APPLICATION_USER" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app_user', :'app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user')
\gexec
SQL

log "writing the database keys to Consul KV at ${CONSUL_HTTP_ADDR}"
kv_put messenger-db-host "$DB_HOST"
kv_put messenger-db-port "$DB_PORT"
kv_put messenger-db-migrator-user "$MIGRATOR_USER"
kv_put messenger-db-migrator-password-never-do-this "$POSTGRES_PASSWORD"
kv_put messenger-db-application-user "$APPLICATION_USER"
kv_put messenger-db-password-never-do-this "$APP_DB_PASSWORD"
log "PostgreSQL is up as ${DB_HOST}:${DB_PORT}; next: messenger-db-migrator-deploy.sh"
