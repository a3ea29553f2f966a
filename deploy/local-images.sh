#!/usr/bin/env bash
# Prepares a machine that cannot pull from a container registry to build and run nnserve: starts
# the Docker engine if it is not running, makes stand-ins for the two public base images
# (python:3.11-slim, nginx:1.28-alpine) from Debian packages with debootstrap and `docker import`,
# and prints the variables that make the Dockerfile and docker-compose.yml use them.
# An image that already exists is kept, so running it again costs a second.
#
#   eval "$(deploy/local-images.sh)"
#   DOCKER_BUILDKIT=1 docker build --network host --build-arg PYTHON_IMAGE -t nnserve:0.1.0 .
#   docker-compose up -d
#
# Needs root (debootstrap, and dockerd if it has to start it), debootstrap and a Debian mirror:
# the one debootstrap uses by default, or DEBIAN_MIRROR.
set -euo pipefail

PYTHON_IMAGE=nnserve-local/python:3.11-bookworm
NGINX_IMAGE=nnserve-local/nginx:bookworm
SUITE=bookworm
# The machine's CA bundle goes into the Python image (and PIP_CERT points at it): downloads made
# inside a build then trust whatever this machine trusts, a TLS-inspecting proxy included.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# Debian's CLI: it builds with BuildKit (the Dockerfile's cache mount) without the buildx plugin.
DOCKER=${DOCKER:-$(command -v /usr/bin/docker docker | head -n 1)}

log() { echo "local-images: $*" >&2; }

start_engine() {
  "$DOCKER" info >/dev/null 2>&1 && return
  if [ "$(id -u)" != 0 ]; then
    log "the Docker engine is not running and only root can start it"
    exit 1
  fi
  local engine_log=${TMPDIR:-/tmp}/nnserve-dockerd.log
  # vfs works on every filesystem, inside a VM or a container too; it copies every layer.
  nohup dockerd --storage-driver="${DOCKER_STORAGE_DRIVER:-vfs}" >"$engine_log" 2>&1 &
  local pid=$!
  for _ in $(seq 60); do
    if "$DOCKER" info >/dev/null 2>&1; then
      log "started dockerd (pid $pid, log $engine_log)"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  log "dockerd did not start; its log:"
  tail -n 20 "$engine_log" >&2
  exit 1
}

# debootstrap's minimal Debian with `packages`, trimmed like the slim images (no apt lists,
# downloaded packages, documentation or translations), adjusted by the function `customise`, and
# imported as `image` with the Dockerfile instructions given as the remaining arguments.
import_debian() {
  local image=$1 packages=$2 customise=$3
  shift 3
  if "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
    log "$image exists"
    return
  fi
  local root=$workdir/root
  log "building $image with debootstrap ($packages)"
  if ! debootstrap --variant=minbase --include="$packages" "$SUITE" "$root" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} \
    >"$workdir/debootstrap.log" 2>&1; then
    tail -n 20 "$workdir/debootstrap.log" >&2
    exit 1
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*.log
  "$customise" "$root"
  tar -C "$root" -c . | "$DOCKER" import "$@" - "$image" >/dev/null
  rm -rf "$root"
  log "imported $image"
}

# The official image's `python` command, and the machine's CA bundle (see CA_BUNDLE).
python_base() {
  ln -s python3.11 "$1/usr/bin/python"
  cp "$CA_BUNDLE" "$1$CA_BUNDLE"
}

# As in the official image: nginx's default logs go to the container's output.
nginx_logs_to_output() {
  ln -sf /dev/stdout "$1/var/log/nginx/access.log"
  ln -sf /dev/stderr "$1/var/log/nginx/error.log"
}

start_engine
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
import_debian "$PYTHON_IMAGE" python3.11,python3.11-venv,python3-pip,ca-certificates python_base \
  --change "ENV PATH=$path" --change "ENV LANG=C.UTF-8" --change "ENV PIP_CERT=$CA_BUNDLE" \
  --change 'CMD ["python"]'
import_debian "$NGINX_IMAGE" nginx nginx_logs_to_output \
  --change "ENV PATH=$path" --change "EXPOSE 80" \
  --change 'CMD ["nginx", "-g", "daemon off;"]'

echo "export PYTHON_IMAGE=$PYTHON_IMAGE NGINX_IMAGE=$NGINX_IMAGE"
