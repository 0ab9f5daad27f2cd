# shellcheck shell=bash
# Shared by the deploy scripts: reading and writing Consul KV, and stopping with a clear message
# before anything starts when Consul or a key is missing.
#
# KV is read from CONSUL_HTTP_ADDR (Consul's own variable; default http://localhost:8500;
# CONSUL_HTTP_TOKEN is sent when set). CONSUL_HOST/CONSUL_PORT are the agent the started
# containers register with, which is a different address: the one they see on their network.
#
# MESSENGER_NETWORK (default messenger) is the Docker network the containers join; `host` runs
# them on the host's own network instead (a host without a container network to the database,
# or scripts/test-images): each serving instance then takes its own port, from 4000 up.
# MESSENGER_DB_NAME (default messenger) is the database the jobs and instances use.

CONSUL_HTTP_ADDR="${CONSUL_HTTP_ADDR:-http://localhost:8500}"
# Consul's CLI accepts host:port without a scheme; so do these scripts.
[[ "$CONSUL_HTTP_ADDR" == *://* ]] || CONSUL_HTTP_ADDR="http://${CONSUL_HTTP_ADDR}"
CONSUL_HTTP_ADDR="${CONSUL_HTTP_ADDR%/}"

log() { printf '==> %s\n' "$*" >&2; }

# usage LAST_LINE [ARG]: the calling script's header comment (lines 2..LAST_LINE); to stdout
# with status 0 when ARG asks for help (-h, --help), else to stderr with status 2.
usage() {
  case "${2:-}" in
    -h | --help) sed -n "2,${1}s/^# \{0,1\}//p" "$0"; exit 0 ;;
    *) sed -n "2,${1}s/^# \{0,1\}//p" "$0" >&2; exit 2 ;;
  esac
}
die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# require_agent_address: CONSUL_HOST and CONSUL_PORT must come from the caller.
require_agent_address() {
  [ -n "${CONSUL_HOST:-}" ] ||
    die "CONSUL_HOST is required: the Consul agent the containers register with (e.g. consul-client)"
  [ -n "${CONSUL_PORT:-}" ] || die "CONSUL_PORT is required: that agent's HTTP port (e.g. 8500)"
  [[ "$CONSUL_PORT" =~ ^[0-9]+$ ]] || die "CONSUL_PORT must be a port number, got '${CONSUL_PORT}'"
}

# consul_curl ARGS...: curl against CONSUL_HTTP_ADDR, the token sent as a header file (not argv).
consul_curl() {
  if [ -n "${CONSUL_HTTP_TOKEN:-}" ]; then
    curl -sS --max-time 10 -H @<(printf 'X-Consul-Token: %s\n' "$CONSUL_HTTP_TOKEN") "$@"
  else
    curl -sS --max-time 10 "$@"
  fi
}

# kv_get KEY VAR: the key's raw value into VAR; a missing or empty key, or no Consul, stops.
kv_get() {
  local key="$1" var="$2" body status
  body="$(mktemp)"
  status="$(consul_curl -o "$body" -w '%{http_code}' "${CONSUL_HTTP_ADDR}/v1/kv/${key}?raw=true" 2>/dev/null)" ||
    status="000"
  local value
  value="$(cat "$body")"
  rm -f "$body"
  case "$status" in
    200) ;;
    000) die "Consul is unreachable at ${CONSUL_HTTP_ADDR} (set CONSUL_HTTP_ADDR); nothing was started" ;;
    404) die "Consul KV key '${key}' is missing at ${CONSUL_HTTP_ADDR}; nothing was started (run messenger-db-deploy.sh, or: consul kv put ${key} VALUE)" ;;
    *) die "Consul at ${CONSUL_HTTP_ADDR} answered HTTP ${status} for KV key '${key}'; nothing was started" ;;
  esac
  [ -n "$value" ] || die "Consul KV key '${key}' is empty at ${CONSUL_HTTP_ADDR}; nothing was started"
  printf -v "$var" '%s' "$value"
}

# kv_load VAR=KEY...: every key into its variable (exported for `docker run -e VAR`), all of
# them read before the caller starts anything.
kv_load() {
  local pair
  for pair in "$@"; do
    kv_get "${pair#*=}" "${pair%%=*}"
    export "${pair%%=*}"
  done
}

# kv_put KEY VALUE: the value travels on stdin, so a password never shows in a process list.
kv_put() {
  printf '%s' "$2" | consul_curl -f -o /dev/null -X PUT --data-binary @- \
    "${CONSUL_HTTP_ADDR}/v1/kv/$1" || die "could not write Consul KV key '$1' at ${CONSUL_HTTP_ADDR}"
}

# require_consul: Consul answers at CONSUL_HTTP_ADDR (a KV read; a missing key is fine).
require_consul() {
  local status
  status="$(consul_curl -o /dev/null -w '%{http_code}' "${CONSUL_HTTP_ADDR}/v1/kv/${1:-messenger-db-host}" 2>/dev/null)" ||
    status="000"
  case "$status" in
    200 | 404) ;;
    000) die "Consul is unreachable at ${CONSUL_HTTP_ADDR} (set CONSUL_HTTP_ADDR); nothing was started" ;;
    *) die "Consul at ${CONSUL_HTTP_ADDR} answered HTTP ${status}; nothing was started" ;;
  esac
}

# random_suffix: 8 hex characters, for unique container names.
random_suffix() { od -An -N4 -tx1 /dev/urandom | tr -d ' \n'; }

# ensure_network NAME: the Docker network the platform's containers share.
ensure_network() {
  docker network inspect "$1" >/dev/null 2>&1 || {
    log "creating the Docker network $1"
    docker network create "$1" >/dev/null
  }
}
