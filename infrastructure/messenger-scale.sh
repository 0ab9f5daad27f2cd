#!/usr/bin/env bash
# Usage: CONSUL_HOST=consul-client CONSUL_PORT=8500 infrastructure/messenger-scale.sh REPLICAS
# Brings the number of messenger serving instances to REPLICAS: starts the missing ones with
# messenger-deploy.sh, or stops the newest extra ones with SIGTERM (`docker stop`), so each
# deregisters from Consul and drains before it exits, then removes them.
set -euo pipefail

# Plain configuration.
ROLE_LABEL="messenger.role=serve" # as set by messenger-deploy.sh
STOP_TIMEOUT=30                   # seconds between SIGTERM and SIGKILL

# shellcheck source=infrastructure/deploy-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"

[ $# -eq 1 ] && [[ "$1" =~ ^[0-9]+$ ]] || usage 5 "${1:-}"
wanted="$1"

# Listed before anything is changed: a daemon that does not answer must not read as "no
# instance running".
listing="$(docker ps --filter "label=${ROLE_LABEL}" --format '{{.Names}}')" ||
  die "could not list the running instances (docker ps failed: is the Docker daemon reachable? DOCKER_HOST=${DOCKER_HOST:-unset}); nothing was changed"
running=()
if [ -n "$listing" ]; then
  mapfile -t names <<<"$listing"
  # Newest first, by creation time: the order `docker ps` lists in is not the same on every
  # engine (podman's Docker API lists the oldest first).
  created="$(docker inspect --format '{{.Created}} {{.Name}}' "${names[@]}")" ||
    die "could not inspect the running instances (docker inspect failed); nothing was changed"
  mapfile -t running < <(
    while read -r at name; do
      printf '%s %s\n' "$(date -d "$at" +%s.%N)" "${name#/}"
    done <<<"$created" | sort -rn | cut -d' ' -f2
  )
  [ "${#running[@]}" -eq "${#names[@]}" ] ||
    die "docker inspect described ${#running[@]} of the ${#names[@]} running instances; nothing was changed"
fi
count="${#running[@]}"
log "${count} instance(s) running, ${wanted} wanted"

if [ "$count" -lt "$wanted" ]; then
  exec "$(dirname "${BASH_SOURCE[0]}")/messenger-deploy.sh" --replicas "$((wanted - count))"
fi
for name in "${running[@]:0:$((count - wanted))}"; do
  log "stopping ${name} (SIGTERM, up to ${STOP_TIMEOUT}s to deregister and drain)"
  docker stop --time "$STOP_TIMEOUT" "$name" >/dev/null
  docker rm "$name" >/dev/null
done
