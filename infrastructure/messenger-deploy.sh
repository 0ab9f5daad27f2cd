#!/usr/bin/env bash
# Usage: CONSUL_HOST=consul-client CONSUL_PORT=8500 infrastructure/messenger-deploy.sh [--replicas N]
# Starts one more messenger serving instance (N with --replicas) under a unique name, configured
# from Consul KV (CONSUL_HTTP_ADDR, default http://localhost:8500). Each instance registers
# with the Consul agent at CONSUL_HOST:CONSUL_PORT and the load balancer picks it up once its
# health check passes. Remove instances with messenger-scale.sh.
set -euo pipefail

# Plain configuration.
IMAGE="${MESSENGER_IMAGE:-messenger:latest}"
NETWORK="${MESSENGER_NETWORK:-messenger}" # or `host` (see deploy-lib.sh)
MESSENGER_ENV="production"
PORT=4000 # on the host's network: the first free port from here
JSON_BODY_LIMIT="100kb"
PGDATABASE="${MESSENGER_DB_NAME:-messenger}"
CONSUL_SERVICE_NAME="messenger"
LOG_FORMAT="json"
STOP_TIMEOUT=30 # seconds between SIGTERM (deregister, drain) and SIGKILL
ROLE_LABEL="messenger.role=serve"
PORT_LABEL="messenger.port"

# shellcheck source=infrastructure/deploy-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"

replicas=1
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) [ $# -ge 2 ] || usage 6; replicas="$2"; shift 2 ;;
    --replicas=*) replicas="${1#*=}"; shift ;;
    *) usage 6 "$1" ;;
  esac
done
[[ "$replicas" =~ ^[1-9][0-9]*$ ]] || die "--replicas takes a positive number, got '${replicas}'"

require_agent_address
kv_load \
  PGHOST=messenger-db-host \
  PGPORT=messenger-db-port \
  PGUSER=messenger-db-application-user \
  PGPASSWORD=messenger-db-password-never-do-this \
  AMQPHOST=amqp-host \
  AMQPPORT=amqp-port

# RabbitMQ credentials and queue are not in the tutorial's KV: passed on when the caller sets them.
broker_options=()
[ -z "${AMQPUSER:-}" ] || broker_options+=(-e AMQPUSER)
[ -z "${AMQPPASSWORD:-}" ] || broker_options+=(-e AMQPPASSWORD)
[ -z "${AMQP_QUEUE:-}" ] || broker_options+=(-e AMQP_QUEUE)

# free_host_port: on the host's network instances cannot share a port: the first one from PORT
# that nothing listens on and no instance started by this script has claimed (it may not be
# listening yet).
free_host_port() {
  local port claimed
  claimed="$(docker ps -a --filter "label=${ROLE_LABEL}" --format "{{.Label \"${PORT_LABEL}\"}}")" ||
    die "could not list the instances (docker ps failed: is the Docker daemon reachable?)"
  for ((port = PORT; port < PORT + 1000; port++)); do
    grep -qx "$port" <<<"$claimed" && continue
    (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null && continue
    echo "$port"
    return
  done
  die "no free port in ${PORT}-$((PORT + 999)) on this host"
}

for ((i = 0; i < replicas; i++)); do
  name="messenger-$(random_suffix)"
  port="$PORT"
  network_options=(--network "$NETWORK" --hostname "$name")
  if [ "$NETWORK" = host ]; then
    port="$(free_host_port)"
    network_options=(--network host) # the host's name: Docker refuses --hostname here
  fi
  # Secrets are passed as `-e NAME` (value from this environment), never on the command line.
  docker run -d \
    --name "$name" \
    "${network_options[@]}" \
    --label "$ROLE_LABEL" \
    --label "${PORT_LABEL}=${port}" \
    --restart unless-stopped \
    --stop-timeout "$STOP_TIMEOUT" \
    -e MESSENGER_ENV="$MESSENGER_ENV" \
    -e PORT="$port" \
    -e JSON_BODY_LIMIT="$JSON_BODY_LIMIT" \
    -e LOG_FORMAT="$LOG_FORMAT" \
    -e PGHOST -e PGPORT -e PGUSER -e PGPASSWORD -e PGDATABASE="$PGDATABASE" \
    -e AMQPHOST -e AMQPPORT "${broker_options[@]}" \
    -e CONSUL_SERVICE_NAME="$CONSUL_SERVICE_NAME" \
    -e CONSUL_HOST="$CONSUL_HOST" \
    -e CONSUL_PORT="$CONSUL_PORT" \
    "$IMAGE" >/dev/null
  log "started ${name} (port ${port})"
  echo "$name"
done
