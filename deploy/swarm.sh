#!/usr/bin/env bash
# nnserve on Docker Swarm (deploy/swarm/stack.yml): replicas behind nginx, rolling updates that
# roll themselves back when the new image turns unhealthy.
#
#   deploy/swarm.sh up [--nodes N] [TAG]  init a swarm if there is none, build nnserve:TAG, deploy, wait
#   deploy/swarm.sh update TAG             build nnserve:TAG and roll the replicas over to it, one at a time
#   deploy/swarm.sh down                   remove the stack (and the nodes, registry and swarm `up` created)
#
# `up --nodes N` (N >= 2) first makes this engine and N-1 more a swarm on this machine: Docker
# engines in containers named nnserve-node-1.. (deploy/local-images.sh --swarm-nodes makes their
# image from Debian's docker.io) on a bridge network of their own, joined as workers, and a
# registry (Debian's docker-registry, over TLS with a certificate made here) every node pulls
# the image from, by digest; N replicas then run one a node. `down` removes all of it.
#
# `up` and `update` return once every replica runs the image and is healthy and nginx answers;
# `update` exits 1 if Swarm rolled the update back. `up` prints the URL. TAG defaults to the
# package's version. Variables (all optional):
#   SWARM_STACK              the stack's name (nnserve)
#   SWARM_IMAGE              the image's name without the tag (nnserve); on a swarm of several
#                            nodes, a name in a registry every node can pull from: it is pushed
#   SWARM_PORT               nginx's port on every manager (8000)
#   SWARM_GRPC_PORT          nginx's gRPC port on every manager (8081)
#   SWARM_REPLICAS           replicas (2 on `up`, N with --nodes; `update` keeps the current count)
#   SWARM_REGISTRY_PORT      with --nodes, the registry's port on the nodes' network (5000)
#   SWARM_BUILD=0            deploy an image that exists already instead of building it
#   SWARM_API_KEYS_FILE      a file of prediction keys (one a line), as a secret; unset: open
#   SWARM_ADMIN_KEYS_FILE    a file of admin keys, as a secret; unset: one made at the first `up`
#                            and kept in SWARM_STATE_DIR
#   SWARM_STATE_DIR          ($XDG_STATE_HOME or ~/.local/state)/nnserve-swarm/<stack>
#   SWARM_ADVERTISE_ADDR     the address a new swarm advertises (that of the default route)
#   SWARM_TIMEOUT            seconds to wait for the replicas (300)
#   PYTHON_IMAGE, NGINX_IMAGE  base images, as for docker-compose.yml (deploy/local-images.sh)
set -euo pipefail
# Paths given by the caller are relative to where it runs, not to the repository.
for variable in SWARM_API_KEYS_FILE SWARM_ADMIN_KEYS_FILE SWARM_STATE_DIR; do
  if [ -n "${!variable:-}" ]; then
    printf -v "$variable" '%s' "$(realpath -m "${!variable}")"
  fi
done
cd "$(dirname "$0")/.."

STACK=${SWARM_STACK:-nnserve}
IMAGE=${SWARM_IMAGE:-nnserve}
PORT=${SWARM_PORT:-8000}
GRPC_PORT=${SWARM_GRPC_PORT:-8081}
REGISTRY_PORT=${SWARM_REGISTRY_PORT:-5000}
TIMEOUT=${SWARM_TIMEOUT:-300}
STATE_DIR=${SWARM_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/nnserve-swarm/$STACK}
# The label `up` puts on the node when it initialised the swarm, so that `down` leaves it again.
CREATED_LABEL=nnserve.created-swarm
# What `up --nodes` makes: the nodes' network, the registry and the node containers carry the
# label; the registry's address is the value of its own.
NODES_LABEL=nnserve.swarm-nodes
NODES_NETWORK=nnserve-nodes
NODE_PREFIX=nnserve-node-
REGISTRY=nnserve-registry
REGISTRY_LABEL=nnserve.registry
# The node label the stack spreads the replicas over (deploy/swarm/stack.yml): a failure domain.
ZONE_LABEL=nnserve.zone
# Debian's CLI builds with BuildKit without the buildx plugin (as in deploy/local-images.sh).
DOCKER=${DOCKER:-$(command -v /usr/bin/docker docker | head -n 1)}

log() { echo "swarm: $*" >&2; }
die() {
  log "$*"
  exit 1
}
usage() {
  echo "usage: $0 up [--nodes N] [TAG] | update TAG | down" >&2
  exit 2
}
docker() { "$DOCKER" "$@"; }

node_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }
node_count() { docker node ls --quiet | wc -l; }
this_node() { docker info --format '{{.Swarm.NodeID}}'; }

advertise_address() {
  if [ -n "${SWARM_ADVERTISE_ADDR:-}" ]; then
    echo "$SWARM_ADVERTISE_ADDR"
    return
  fi
  local device
  device=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
  [ -n "$device" ] || die "no default route: set SWARM_ADVERTISE_ADDR to this node's address"
  ip -4 -o address show dev "$device" | awk '{split($4, a, "/"); print a[1]; exit}'
}

# A swarm needs an address other nodes can reach: `docker swarm init` refuses loopback. The
# address is the argument, or that of advertise_address.
ensure_swarm() {
  case $(node_state) in
    active)
      [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
        die "this node is a swarm worker: run $0 on a manager"
      ;;
    inactive)
      local address=${1:-}
      [ -n "$address" ] || address=$(advertise_address)
      docker swarm init --advertise-addr "$address" >/dev/null
      docker node update --label-add "$CREATED_LABEL=true" "$(this_node)" >/dev/null
      log "initialised a swarm of one node, advertising $address ('$0 down' leaves it again)"
      ;;
    *) die "the engine's swarm state is $(node_state): resolve it first (docker info)" ;;
  esac
}

version() { sed -n 's/^__version__ = "\(.*\)"$/\1/p' service/__init__.py; }

# Builds `image` (unless SWARM_BUILD=0) and, on a swarm of several nodes, pushes it for the
# others: to the registry `up --nodes` made, if there is one, as `deployed` (printed).
build() {
  local image=$1 deployed=$1 registry
  if [ "${SWARM_BUILD:-1}" = 0 ]; then
    docker image inspect "$image" >/dev/null 2>&1 || die "SWARM_BUILD=0, but there is no image $image"
  else
    log "building $image"
    DOCKER_BUILDKIT=1 docker build --quiet --network host --build-arg PYTHON_IMAGE --tag "$image" . >/dev/null
  fi
  registry=$(nodes_registry)
  if [ -n "$registry" ]; then
    deployed=$registry/$image
    docker tag "$image" "$deployed"
  fi
  if [ "$(node_count)" -gt 1 ]; then
    log "pushing $deployed for the other nodes"
    docker push --quiet "$deployed" >/dev/null
  fi
  echo "$deployed"
}

digest() { sha256sum "$1" | cut -c 1-12; }

admin_keys_file() {
  if [ -n "${SWARM_ADMIN_KEYS_FILE:-}" ]; then
    echo "$SWARM_ADMIN_KEYS_FILE"
    return
  fi
  local file=$STATE_DIR/admin-keys
  if [ ! -s "$file" ]; then
    mkdir -p "$STATE_DIR"
    (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$file")
    log "made an admin key: $file"
  fi
  echo "$file"
}

service() { echo "${STACK}_$1"; }
without_digest() { echo "${1%%@*}"; }

# The running replicas' images, one a line ("image state"): those Swarm wants running.
running_tasks() {
  docker service ps "$(service api)" --filter desired-state=running --format '{{.Image}} {{.CurrentState}}'
}

# Waits until every replica runs `image` and is healthy (Swarm reports a task with a
# healthcheck as running only once it is healthy). A rollback puts the previous image back in
# the service's spec: then it waits for the previous image instead, and fails once it runs.
wait_for_replicas() {
  local image=$1 deadline=$((SECONDS + TIMEOUT)) api cause=""
  api=$(service api)
  while true; do
    local spec state desired tasks ready
    spec=$(without_digest "$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "$api")")
    state=$(docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$api")
    case $state in
      rollback_started) cause=$(docker service inspect --format '{{.UpdateStatus.Message}}' "$api") ;;
      paused | rollback_paused)
        die "the update is paused: $(docker service inspect --format '{{.UpdateStatus.Message}}' "$api")"
        ;;
    esac
    desired=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "$api")
    tasks=$(running_tasks)
    ready=$(awk -v image="$spec" '$1 == image && $2 == "Running"' <<<"$tasks" | wc -l)
    if [ "$state" != updating ] && [ "$state" != rollback_started ] &&
      [ "$ready" = "$desired" ] && [ "$(wc -l <<<"$tasks")" = "$desired" ]; then
      [ "$spec" = "$image" ] || die "the update to $image failed; Swarm rolled back to $spec (${cause:-rolled back})"
      return
    fi
    [ $SECONDS -lt "$deadline" ] || die "not every replica ran $image healthy within ${TIMEOUT}s:
$(docker service ps --no-trunc "$api" | sed -n 1,20p)"
    sleep 1
  done
}

update_started() { docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}}{{end}}' "$(service api)"; }
task_template() { docker service inspect --format '{{json .Spec.TaskTemplate}}' "$(service api)"; }

# Any change to the replicas' spec (image, keys, settings) starts a rolling update, but not at
# once: until it has, the old replicas look like a finished one.
wait_for_update_start() {
  local before=$1 deadline=$((SECONDS + 60))
  while [ "$(update_started)" = "$before" ]; do
    [ $SECONDS -lt "$deadline" ] || die "Swarm did not start the update within 60s"
    sleep 0.5
  done
}

wait_for_nginx() {
  local deadline=$((SECONDS + TIMEOUT))
  until curl -fsS -o /dev/null "http://127.0.0.1:$PORT/ready" 2>/dev/null; do
    [ $SECONDS -lt "$deadline" ] || die "nginx did not answer on :$PORT within ${TIMEOUT}s:
$(docker service ps --no-trunc "$(service nginx)")"
    sleep 1
  done
}

deploy() {
  local image=$1 replicas=$2 admin_keys
  admin_keys=$(admin_keys_file)
  [ -r "$admin_keys" ] || die "cannot read the admin keys $admin_keys"
  local files=(--compose-file deploy/swarm/stack.yml)
  if [ -n "${SWARM_API_KEYS_FILE:-}" ]; then
    [ -r "$SWARM_API_KEYS_FILE" ] || die "cannot read the prediction keys $SWARM_API_KEYS_FILE"
    files+=(--compose-file deploy/swarm/api-keys.yml)
    export SWARM_API_KEYS_DIGEST
    SWARM_API_KEYS_DIGEST=$(digest "$SWARM_API_KEYS_FILE")
  fi
  # An image on one node needs no registry; on several, every node pulls the same digest.
  local resolve=never
  [ "$(node_count)" -eq 1 ] || resolve=always
  local template="" started=""
  if docker service inspect "$(service api)" >/dev/null 2>&1; then
    template=$(task_template)
    started=$(update_started)
  fi
  NNSERVE_IMAGE=$image SWARM_STACK=$STACK SWARM_PORT=$PORT SWARM_GRPC_PORT=$GRPC_PORT SWARM_REPLICAS=$replicas \
    SWARM_ADMIN_KEYS_FILE=$admin_keys SWARM_ADMIN_KEYS_DIGEST=$(digest "$admin_keys") \
    SWARM_NGINX_CONF_DIGEST=$(digest deploy/swarm/nginx.conf) \
    docker stack deploy --with-registry-auth --resolve-image "$resolve" "${files[@]}" "$STACK" >/dev/null
  if [ -n "$template" ] && [ "$(task_template)" != "$template" ]; then
    wait_for_update_start "$started"
  fi
  wait_for_replicas "$image"
  wait_for_nginx
}

# --- `up --nodes N`: more engines on this machine, a registry, and the swarm over them ---

# The registry `up --nodes` made ("address:port"), if there is one.
nodes_registry() {
  docker container inspect --format "{{index .Config.Labels \"$REGISTRY_LABEL\"}}" "$REGISTRY" 2>/dev/null || true
}

# The capabilities this machine withholds (its bounding set lacks them): asking for one makes
# runc fail, which is why the nodes get every other capability instead of --privileged.
withheld_capabilities() {
  local names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE
    SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
    SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
    WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
  local bounding i
  bounding=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
  for i in "${!names[@]}"; do
    if (((bounding >> i & 1) == 0)); then
      echo "${names[$i]}"
    fi
  done
}

# The image a variable names in the output of deploy/local-images.sh (`images`).
local_image() { grep -o "$1=[^ ]*" <<<"$2" | cut -d = -f 2; }

# A certificate for the registry's address, its own CA: each engine trusts it through
# /etc/docker/certs.d/<address>/ca.crt (read at each pull and push, so no engine restarts).
registry_certificate() {
  local address=$1 directory=$STATE_DIR/registry
  mkdir -p "$directory"
  (umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$REGISTRY" \
    -addext "subjectAltName=IP:${address%:*}" -keyout "$directory/key.pem" -out "$directory/cert.pem" 2>/dev/null)
  chmod 644 "$directory/cert.pem"
  mkdir -p "/etc/docker/certs.d/$address"
  cp "$directory/cert.pem" "/etc/docker/certs.d/$address/ca.crt"
}

# The registry on this engine, listening on the nodes' network's gateway: this engine pushes
# there, and every node reaches it.
start_registry() {
  local address=$1 image=$2 deadline=$((SECONDS + 60))
  registry_certificate "$address"
  docker run --detach --name "$REGISTRY" --label "$NODES_LABEL=$STACK" --label "$REGISTRY_LABEL=$address" \
    --network host --env "REGISTRY_HTTP_ADDR=$address" --volume "$STATE_DIR/registry:/certs:ro" \
    --mount type=tmpfs,dst=/var/lib/docker-registry "$image" >/dev/null
  until curl -fsS -o /dev/null --cacert "$STATE_DIR/registry/cert.pem" "https://$address/v2/" 2>/dev/null; do
    [ $SECONDS -lt "$deadline" ] || die "the registry did not answer on $address within 60s:
$(docker logs --tail 20 "$REGISTRY" 2>&1)"
    sleep 0.5
  done
  log "registry on $address"
}

# Node `name`: an engine in a container on the nodes' network, with the registry's certificate,
# joined to the swarm as a worker. Its storage is a tmpfs: vfs copies every layer of every image
# (about 2.5 GB a node for the service's image), which on disk takes minutes to write and to
# delete again.
start_node() {
  local name=$1 image=$2 registry=$3 token=$4 manager=$5 deadline=$((SECONDS + 60)) capability
  local privileges=(--cap-add ALL --security-opt seccomp=unconfined --security-opt apparmor=unconfined
    --security-opt systempaths=unconfined)
  for capability in $(withheld_capabilities); do
    privileges+=(--cap-drop "$capability")
  done
  docker run --detach --name "$name" --hostname "$name" --label "$NODES_LABEL=$STACK" \
    --network "$NODES_NETWORK" "${privileges[@]}" --tmpfs /var/lib/docker:exec \
    --mount "type=bind,src=$STATE_DIR/registry/cert.pem,dst=/etc/docker/certs.d/$registry/ca.crt,readonly" \
    "$image" >/dev/null
  until docker exec "$name" docker info >/dev/null 2>&1; do
    [ $SECONDS -lt "$deadline" ] || die "the engine in $name did not start within 60s:
$(docker logs --tail 20 "$name" 2>&1)"
    sleep 0.5
  done
  docker exec "$name" docker swarm join --token "$token" "$manager" >/dev/null
  docker node update --label-add "$ZONE_LABEL=$name" "$name" >/dev/null
}

# This engine and `count - 1` nodes as one swarm, and the registry; what exists already stays.
make_nodes() {
  local count=$1 images gateway registry token manager number
  command -v openssl >/dev/null || die "openssl is needed to make the registry's certificate"
  images=$(deploy/local-images.sh --swarm-nodes) || die "deploy/local-images.sh --swarm-nodes failed"
  if ! docker network inspect "$NODES_NETWORK" >/dev/null 2>&1; then
    docker network create --label "$NODES_LABEL=$STACK" "$NODES_NETWORK" >/dev/null
  fi
  gateway=$(docker network inspect --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$NODES_NETWORK")
  # A swarm made here is reached on the nodes' network; an existing one where it is.
  ensure_swarm "$gateway"
  docker node update --label-add "$ZONE_LABEL=$(docker info --format '{{.Name}}')" "$(this_node)" >/dev/null
  registry=$(nodes_registry)
  if [ -z "$registry" ]; then
    registry=$gateway:$REGISTRY_PORT
    start_registry "$registry" "$(local_image SWARM_REGISTRY_IMAGE "$images")"
  fi
  token=$(docker swarm join-token --quiet worker)
  manager=$(docker info --format '{{.Swarm.NodeAddr}}'):2377
  for number in $(seq $((count - 1))); do
    if [ -z "$(docker ps --quiet --filter "name=^$NODE_PREFIX$number\$")" ]; then
      docker rm --force --volumes "$NODE_PREFIX$number" >/dev/null 2>&1 || true
      start_node "$NODE_PREFIX$number" "$(local_image SWARM_NODE_IMAGE "$images")" "$registry" "$token" "$manager"
      log "$NODE_PREFIX$number joined the swarm"
    fi
  done
}

# Removes what `up --nodes` made: the node containers (and their engines' storage), their
# entries in the swarm, the registry, its certificate and the nodes' network.
remove_nodes() {
  local label=label=$NODES_LABEL=$STACK containers names registry
  containers=$(docker ps --all --quiet --filter "$label")
  [ -n "$containers$(docker network ls --quiet --filter "$label")" ] || return 0
  registry=$(nodes_registry)
  names=$(docker ps --all --filter "$label" --filter "name=^$NODE_PREFIX" --format '{{.Names}}')
  if [ -n "$containers" ]; then
    # shellcheck disable=SC2086 # one id a word
    docker rm --force --volumes $containers >/dev/null
  fi
  if [ "$(node_state)" = active ]; then
    for name in $names; do
      docker node rm --force "$name" >/dev/null 2>&1 || true
    done
    docker node update --label-rm "$ZONE_LABEL" "$(this_node)" >/dev/null 2>&1 || true
  fi
  if [ -n "$registry" ]; then
    rm -rf "/etc/docker/certs.d/$registry" "$STATE_DIR/registry"
    # The names `build` gave the images for the registry (their other names stay).
    local pushed
    pushed=$(docker image ls --format '{{.Repository}}:{{.Tag}}' --filter "reference=$registry/*:*")
    # shellcheck disable=SC2086 # one name a word
    [ -z "$pushed" ] || docker image rm $pushed >/dev/null
  fi
  docker network rm "$NODES_NETWORK" >/dev/null 2>&1 || true
  log "removed the nodes and the registry"
}

up() {
  local nodes=1 tag="" started=$SECONDS
  while [ $# -gt 0 ]; do
    case $1 in
      --nodes)
        if [ $# -lt 2 ] || ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt 2 ]; then
          die "--nodes takes a number, 2 or more"
        fi
        nodes=$2
        shift 2
        ;;
      -*) usage ;;
      *)
        [ -z "$tag" ] || usage
        tag=$1
        shift
        ;;
    esac
  done
  local image=$IMAGE:${tag:-$(version)} replicas=${SWARM_REPLICAS:-2}
  command -v curl >/dev/null || die "curl is needed to check that nginx answers"
  if [ "$nodes" -gt 1 ]; then
    replicas=${SWARM_REPLICAS:-$nodes}
    make_nodes "$nodes"
  else
    ensure_swarm
  fi
  image=$(build "$image")
  deploy "$image" "$replicas"
  log "$(service api): $replicas replicas of $image healthy behind nginx, $((SECONDS - started)) s after start"
  echo "http://localhost:$PORT"
}

update() {
  local image=$IMAGE:$1 replicas
  [ "$(node_state)" = active ] || die "no swarm here: $0 up first"
  replicas=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "$(service api)" 2>/dev/null) ||
    die "no stack $STACK: $0 up first"
  image=$(build "$image")
  deploy "$image" "${SWARM_REPLICAS:-$replicas}"
  log "$(service api): every replica runs $image"
}

down() {
  local label=label=com.docker.stack.namespace=$STACK
  remove_nodes
  if [ "$(node_state)" != active ]; then
    log "no swarm here: nothing to remove"
    return
  fi
  docker stack rm "$STACK" >/dev/null
  # `stack rm` returns before the containers have stopped (each drains first).
  local deadline=$((SECONDS + TIMEOUT))
  while [ -n "$(docker ps --all --quiet --filter "$label")" ]; do
    [ $SECONDS -lt "$deadline" ] || die "the stack's containers did not stop within ${TIMEOUT}s"
    sleep 1
  done
  # A network still attached to a stopping container when `stack rm` tried to remove it stays.
  local networks
  networks=$(docker network ls --quiet --filter "$label")
  if [ -n "$networks" ]; then
    # shellcheck disable=SC2086 # one network id a word
    docker network rm $networks >/dev/null
  fi
  log "removed the stack $STACK"
  local created
  created=$(docker node inspect --format "{{index .Spec.Labels \"$CREATED_LABEL\"}}" self)
  if [ "$created" = true ] && [ -z "$(docker service ls --quiet)" ]; then
    docker swarm leave --force >/dev/null
    # `swarm init` made this bridge for the nodes' own traffic; leaving does not remove it.
    docker network rm docker_gwbridge >/dev/null 2>&1 || true
    log "left the swarm '$0 up' created"
  fi
}

[ $# -ge 1 ] || usage
case $1 in
  up) shift; up "$@" ;;
  update) [ $# -eq 2 ] || usage; update "$2" ;;
  down) [ $# -eq 1 ] || usage; down ;;
  *) usage ;;
esac
