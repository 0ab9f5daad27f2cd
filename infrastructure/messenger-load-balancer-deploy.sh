#!/usr/bin/env bash
# Usage: CONSUL_HOST=consul-client CONSUL_PORT=8500 infrastructure/messenger-load-balancer-deploy.sh
# Starts the load balancer (nginx + consul-template) on PUBLISHED_PORT. It follows the passing
# `messenger` instances known to the Consul agent at CONSUL_HOST:CONSUL_PORT.
set -euo pipefail

# Plain configuration.
IMAGE="${LOAD_BALANCER_IMAGE:-messenger-load-balancer:latest}"
CONTAINER_NAME="messenger-load-balancer"
NETWORK="messenger"
PUBLISHED_PORT=8085
STOP_TIMEOUT=30 # seconds for nginx to finish its requests on `docker stop`

# shellcheck source=infrastructure/deploy-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"

[ $# -eq 0 ] || usage 4 "$1"

require_agent_address
require_consul
if [ -n "$(docker ps -aq --filter "name=^/${CONTAINER_NAME}$")" ]; then
  die "a container named ${CONTAINER_NAME} exists already; remove it first (docker rm -f ${CONTAINER_NAME})"
fi

ensure_network "$NETWORK"
docker run -d \
  --name "$CONTAINER_NAME" \
  --network "$NETWORK" \
  --restart unless-stopped \
  --stop-timeout "$STOP_TIMEOUT" \
  --publish "${PUBLISHED_PORT}:8085" \
  -e CONSUL_HTTP_ADDR="${CONSUL_HOST}:${CONSUL_PORT}" \
  "$IMAGE" >/dev/null
log "load balancer listening on :${PUBLISHED_PORT}, following Consul at ${CONSUL_HOST}:${CONSUL_PORT}"
