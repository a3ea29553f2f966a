#!/usr/bin/env bash
# nnserve on Docker Swarm (deploy/swarm/stack.yml): replicas behind nginx, rolling updates that
# roll themselves back when the new image turns unhealthy.
#
#   deploy/swarm.sh up [TAG]     init a swarm if there is none, build nnserve:TAG, deploy, wait
#   deploy/swarm.sh update TAG   build nnserve:TAG and roll the replicas over to it, one at a time
#   deploy/swarm.sh down         remove the stack (and the swarm, if `up` created it)
#
# `up` and `update` return once every replica runs the image and is healthy and nginx answers;
# `update` exits 1 if Swarm rolled the update back. `up` prints the URL. TAG defaults to the
# package's version. Variables (all optional):
#   SWARM_STACK              the stack's name (nnserve)
#   SWARM_IMAGE              the image's name without the tag (nnserve); on a swarm of several
#                            nodes, a name in a registry every node can pull from: it is pushed
#   SWARM_PORT               nginx's port on every node (8000)
#   SWARM_REPLICAS           replicas (2 on `up`; `update` keeps the current count)
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
TIMEOUT=${SWARM_TIMEOUT:-300}
STATE_DIR=${SWARM_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/nnserve-swarm/$STACK}
# The label `up` puts on the node when it initialised the swarm, so that `down` leaves it again.
CREATED_LABEL=nnserve.created-swarm
# Debian's CLI builds with BuildKit without the buildx plugin (as in deploy/local-images.sh).
DOCKER=${DOCKER:-$(command -v /usr/bin/docker docker | head -n 1)}

log() { echo "swarm: $*" >&2; }
die() {
  log "$*"
  exit 1
}
usage() {
  echo "usage: $0 up [TAG] | update TAG | down" >&2
  exit 2
}
docker() { "$DOCKER" "$@"; }

node_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }
node_count() { docker node ls --quiet | wc -l; }

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

# A swarm needs an address other nodes can reach: `docker swarm init` refuses loopback.
ensure_swarm() {
  case $(node_state) in
    active)
      [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
        die "this node is a swarm worker: run $0 on a manager"
      ;;
    inactive)
      local address
      address=$(advertise_address)
      docker swarm init --advertise-addr "$address" >/dev/null
      docker node update --label-add "$CREATED_LABEL=true" "$(docker info --format '{{.Swarm.NodeID}}')" >/dev/null
      log "initialised a swarm of one node, advertising $address ('$0 down' leaves it again)"
      ;;
    *) die "the engine's swarm state is $(node_state): resolve it first (docker info)" ;;
  esac
}

version() { sed -n 's/^__version__ = "\(.*\)"$/\1/p' service/__init__.py; }

build() {
  local image=$1
  if [ "${SWARM_BUILD:-1}" = 0 ]; then
    docker image inspect "$image" >/dev/null 2>&1 || die "SWARM_BUILD=0, but there is no image $image"
    return
  fi
  log "building $image"
  DOCKER_BUILDKIT=1 docker build --quiet --network host --build-arg PYTHON_IMAGE --tag "$image" . >/dev/null
  if [ "$(node_count)" -gt 1 ]; then
    log "pushing $image for the other nodes"
    docker push --quiet "$image" >/dev/null
  fi
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
$(docker service ps --no-trunc "$api" | head -n 20)"
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
  NNSERVE_IMAGE=$image SWARM_STACK=$STACK SWARM_PORT=$PORT SWARM_REPLICAS=$replicas \
    SWARM_ADMIN_KEYS_FILE=$admin_keys SWARM_ADMIN_KEYS_DIGEST=$(digest "$admin_keys") \
    SWARM_NGINX_CONF_DIGEST=$(digest deploy/swarm/nginx.conf) \
    docker stack deploy --with-registry-auth --resolve-image "$resolve" "${files[@]}" "$STACK" >/dev/null
  if [ -n "$template" ] && [ "$(task_template)" != "$template" ]; then
    wait_for_update_start "$started"
  fi
  wait_for_replicas "$image"
  wait_for_nginx
}

up() {
  local image=$IMAGE:${1:-$(version)} started=$SECONDS
  command -v curl >/dev/null || die "curl is needed to check that nginx answers"
  ensure_swarm
  build "$image"
  deploy "$image" "${SWARM_REPLICAS:-2}"
  log "$(service api): ${SWARM_REPLICAS:-2} replicas of $image healthy behind nginx, $((SECONDS - started)) s after start"
  echo "http://localhost:$PORT"
}

update() {
  local image=$IMAGE:$1 replicas
  [ "$(node_state)" = active ] || die "no swarm here: $0 up first"
  replicas=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "$(service api)" 2>/dev/null) ||
    die "no stack $STACK: $0 up first"
  build "$image"
  deploy "$image" "${SWARM_REPLICAS:-$replicas}"
  log "$(service api): every replica runs $image"
}

down() {
  local label=label=com.docker.stack.namespace=$STACK
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
  up) [ $# -le 2 ] || usage; up "${2:-}" ;;
  update) [ $# -eq 2 ] || usage; update "$2" ;;
  down) [ $# -eq 1 ] || usage; down ;;
  *) usage ;;
esac
