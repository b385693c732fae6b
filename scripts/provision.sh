#!/usr/bin/env bash
# One provisioning script for a fresh machine (README, .ci/run and tests reuse it).
# Idempotent and fast when everything is present:
#   1. Debian packages: docker.io (daemon + client), mmdebstrap (base image), make.
#   2. dockerd started (loopback-only port publishing) when no daemon answers.
#   3. The local `python:3.11-slim` base image, built from Debian bookworm when missing
#      (no registry is reachable here, so `FROM python:3.11-slim` must resolve locally).
#   3b. A local image registry (Debian's docker-registry) on 127.0.0.1:5000 for the `local`
#      deploy target (FLIGHTCHECK_LOCAL_REGISTRY=127.0.0.1:PORT moves it), started when no
#      registry answers there.
#   4. A virtualenv at .venv with flightcheck installed editable, with [dev] extras.
#   5. Debian's chromium: the HTML report is tested in a real headless browser.
# Usage: scripts/provision.sh [--no-docker] [--no-venv] [--no-browser]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
want_docker=1
want_venv=1
want_browser=1
for arg in "$@"; do
  case "$arg" in
    --no-docker) want_docker=0 ;;
    --no-venv) want_venv=0 ;;
    --no-browser) want_browser=0 ;;
    *) echo "provision: unknown option $arg (use --no-docker / --no-venv / --no-browser)" >&2; exit 2 ;;
  esac
done

log() { printf '[provision] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

BASE_IMAGE=${FLIGHTCHECK_BASE_IMAGE:-python:3.11-slim}
DOCKER=/usr/bin/docker   # Debian's client matches the daemon's API (v20.10)

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

docker_up() {
  if "$DOCKER" info >/dev/null 2>&1; then return 0; fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd (ports publish on 127.0.0.1 only)"
    as_root mkdir -p /var/log
    # setsid: the daemon must outlive this script and not get the caller's Ctrl-C.
    as_root setsid dockerd --ip=127.0.0.1 >/var/log/flightcheck-dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "dockerd did not answer within 30 s; see /var/log/flightcheck-dockerd.log"
  return 1
}

base_image() {
  if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  log "building $BASE_IMAGE from Debian bookworm (mmdebstrap, ~1 min)"
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  mkdir -p "$tmp/certs"
  cp /usr/local/share/ca-certificates/*.crt "$tmp/certs/" 2>/dev/null || true
  as_root mmdebstrap --variant=apt --mode=root --format=tar \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --customize-hook="copy-in $tmp/certs/. /usr/local/share/ca-certificates/" \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null 2>&1 || true' \
    --customize-hook='ln -sf /usr/bin/python3 "$1/usr/bin/python"' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$tmp/rootfs.tar" >/dev/null
  # Shape it like the official image: python on PATH, unbuffered, certs for pip (REQUESTS_CA_BUNDLE
  # is not needed because update-ca-certificates wrote the system bundle pip's certifi ignores;
  # PIP_CERT points pip at the system bundle).
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    "$tmp/rootfs.tar" "$BASE_IMAGE" >/dev/null
  log "built $BASE_IMAGE ($("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes)"
}

# The local deploy target pushes images here and its Cloud Run emulator pulls them by digest.
# Our own config (loopback only, no auth, deletes allowed); Docker trusts plain HTTP to
# 127.0.0.0/8 registries without an insecure-registries entry.
REGISTRY=${FLIGHTCHECK_LOCAL_REGISTRY:-127.0.0.1:5000}
REGISTRY_CONFIG=/etc/flightcheck/registry.yml

registry_answers() { curl -fsS -m 2 -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null; }

registry_up() {
  registry_answers && return 0
  local host=${REGISTRY%:*} port=${REGISTRY##*:}
  if [ "$host" != 127.0.0.1 ] && [ "$host" != localhost ]; then
    log "FLIGHTCHECK_LOCAL_REGISTRY=$REGISTRY does not answer and is not on this machine"
    return 1
  fi
  as_root mkdir -p /etc/flightcheck /var/lib/docker-registry
  as_root tee "$REGISTRY_CONFIG.tmp" >/dev/null <<YAML
# written by flightcheck's scripts/provision.sh: the local deploy target's registry
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
  as_root mv "$REGISTRY_CONFIG.tmp" "$REGISTRY_CONFIG"
  log "starting docker-registry on 127.0.0.1:$port"
  as_root setsid docker-registry serve "$REGISTRY_CONFIG" \
    >/var/log/flightcheck-registry.log 2>&1 < /dev/null &
  for _ in $(seq 1 40); do
    registry_answers && return 0
    sleep 0.25
  done
  log "docker-registry did not answer on $REGISTRY within 10 s; see /var/log/flightcheck-registry.log"
  return 1
}

venv() {
  local py=${PYTHON:-python3}
  if [ ! -x "$here/.venv/bin/python" ]; then
    log "creating .venv"
    "$py" -m venv "$here/.venv"
  fi
  local stamp="$here/.venv/.flightcheck-installed"
  if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
    log "pip install -e .[dev]"
    "$here/.venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$here/.venv/bin/python" -m pip install -q -e "$here[dev]"
    touch "$stamp"
  fi
}

if [ "$want_docker" = 1 ]; then
  apt_install docker.io mmdebstrap make docker-registry curl
  docker_up
  base_image
  registry_up
fi
if [ "$want_browser" = 1 ]; then
  apt_install chromium
fi
if [ "$want_venv" = 1 ]; then
  venv
fi
log "ready"
