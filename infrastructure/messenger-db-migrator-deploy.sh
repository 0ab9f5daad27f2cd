#!/usr/bin/env bash
# Usage: infrastructure/messenger-db-migrator-deploy.sh
# Runs the migrator role of the messenger image to completion with the elevated user from
# Consul KV (create the database if missing, migrate, grant the application user), then the
# seed job; fails when either fails. Never registers in Consul.
set -euo pipefail

# Plain configuration.
IMAGE="${MESSENGER_IMAGE:-messenger:latest}"
NETWORK="${MESSENGER_NETWORK:-messenger}" # or `host` (see deploy-lib.sh)
MESSENGER_ENV="production"
PGDATABASE="${MESSENGER_DB_NAME:-messenger}"
SEED=true # insert the tutorial's three users (safe to rerun)

# shellcheck source=infrastructure/deploy-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"

[ $# -eq 0 ] || usage 5 "$1"

kv_load \
  PGHOST=messenger-db-host \
  PGPORT=messenger-db-port \
  PGUSER=messenger-db-migrator-user \
  PGPASSWORD=messenger-db-migrator-password-never-do-this \
  APP_DB_USER=messenger-db-application-user \
  APP_DB_PASSWORD=messenger-db-password-never-do-this

# Secrets are passed as `-e NAME` (value from this environment), never on the command line.
job() {
  local name
  name="messenger-migrator-$(random_suffix)"
  docker run --rm \
    --name "$name" \
    --network "$NETWORK" \
    -e MESSENGER_ENV="$MESSENGER_ENV" \
    -e MESSENGER_ROLE=migrator \
    -e PGHOST -e PGPORT -e PGUSER -e PGPASSWORD -e PGDATABASE="$PGDATABASE" \
    -e APP_DB_USER -e APP_DB_PASSWORD \
    "$IMAGE" "$@"
}

log "migrating ${PGDATABASE} on ${PGHOST}:${PGPORT} as ${PGUSER}"
job || die "the migrate job failed (exit $?); the database was left as the job left it"
if [ "$SEED" = true ]; then
  log "seeding the tutorial's users"
  job python -m messenger seed || die "the seed job failed (exit $?)"
fi
log "database ready; next: messenger-deploy.sh"
