#!/usr/bin/env bash
# Prepares a machine that cannot pull from a container registry to build and run nnserve: starts
# the Docker engine if it is not running, makes stand-ins for the two public base images
# (python:3.11-slim, nginx:1.28-alpine) from Debian packages with debootstrap and `docker import`,
# and prints the variables that make the Dockerfile and docker-compose.yml use them.
# With --swarm-nodes it also makes the two images `deploy/swarm.sh up --nodes N` runs: a Docker
# engine (Debian's docker.io) to run in a privileged container as one more swarm node, and an
# image registry (Debian's docker-registry) every node pulls the service's image from.
# An image that already exists is kept, so running it again costs a second.
#
#   eval "$(deploy/local-images.sh)"
#   eval "$(deploy/local-images.sh --swarm-nodes)"   # PYTHON_IMAGE, NGINX_IMAGE, SWARM_NODE_IMAGE, SWARM_REGISTRY_IMAGE
#   DOCKER_BUILDKIT=1 docker build --network host --build-arg PYTHON_IMAGE -t nnserve:0.1.0 .
#   docker-compose up -d
#
# Needs root (debootstrap, and dockerd if it has to start it), debootstrap and a Debian mirror:
# the one debootstrap uses by default, or DEBIAN_MIRROR.
set -euo pipefail

PYTHON_IMAGE=nnserve-local/python:3.11-bookworm
NGINX_IMAGE=nnserve-local/nginx:bookworm
SWARM_NODE_IMAGE=nnserve-local/docker:bookworm
SWARM_REGISTRY_IMAGE=nnserve-local/registry:bookworm
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

# The node's entrypoint. deploy/swarm.sh gives the node every capability the machine has rather
# than --privileged (which fails where the machine's own bounding set lacks one), so Docker
# mounts /sys and the cgroup hierarchies read-only: the engine needs them writable to make its
# own containers' cgroups, under the node's. Tested with cgroup v1 hierarchies.
node_engine() {
  cat >"$1/usr/local/bin/nnserve-node-engine" <<'SCRIPT'
#!/bin/sh
set -eu
mount -o remount,rw /sys
for hierarchy in $(awk '$5 ~ "^/sys/fs/cgroup/" {print $5}' /proc/self/mountinfo); do
  mount -o remount,bind,rw "$hierarchy"
done
exec dockerd --storage-driver=vfs "$@"
SCRIPT
  chmod 755 "$1/usr/local/bin/nnserve-node-engine"
}

# The registry without the package's htpasswd authentication (its file is not there), over TLS
# with the certificate and key deploy/swarm.sh mounts on /certs.
registry_config() {
  cat >"$1/etc/docker/registry/config.yml" <<'CONFIG'
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
http:
  addr: :5000
  tls:
    certificate: /certs/cert.pem
    key: /certs/key.pem
CONFIG
}

swarm_nodes=false
case ${1:-} in
  --swarm-nodes) swarm_nodes=true ;;
  "") ;;
  *)
    echo "usage: $0 [--swarm-nodes]" >&2
    exit 2
    ;;
esac

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

if [ "$swarm_nodes" = false ]; then
  echo "export PYTHON_IMAGE=$PYTHON_IMAGE NGINX_IMAGE=$NGINX_IMAGE"
  exit 0
fi
# The engine keeps its images and containers with vfs (overlay cannot stack on the outer
# engine's files; deploy/swarm.sh gives it a tmpfs); tini reaps what the engine's shims leave
# behind when they exit.
import_debian "$SWARM_NODE_IMAGE" docker.io,iptables,ca-certificates node_engine \
  --change "ENV PATH=$path" \
  --change 'ENTRYPOINT ["tini", "--", "nnserve-node-engine"]'
import_debian "$SWARM_REGISTRY_IMAGE" docker-registry registry_config \
  --change "ENV PATH=$path" --change "EXPOSE 5000" \
  --change 'CMD ["docker-registry", "serve", "/etc/docker/registry/config.yml"]'
echo "export PYTHON_IMAGE=$PYTHON_IMAGE NGINX_IMAGE=$NGINX_IMAGE SWARM_NODE_IMAGE=$SWARM_NODE_IMAGE SWARM_REGISTRY_IMAGE=$SWARM_REGISTRY_IMAGE"
