#!/usr/bin/env bash
# Sends one administrative call (model load, unload, the repository index) to every replica.
#
# Behind a load balancer an admin call reaches one replica only: `POST .../models/wine/load`
# through nginx or a Kubernetes Service loads the new version on whichever replica answered, and
# the others go on serving the old one. This script goes round the balancer: it runs the call
# inside each replica, against the replica's own port, with the replica's own first admin key
# (NNSERVE_ADMIN_KEYS or the file NNSERVE_ADMIN_KEYS_FILE), so no key has to leave the containers.
#
#   deploy/every-replica.sh compose /v2/repository/models/wine/load
#   deploy/every-replica.sh kubernetes /v2/repository/models/wine/unload
#
# compose: the `api` service's containers of the project in this folder (COMPOSE, default
# "docker compose"; Debian's docker-compose 1.29 works too: COMPOSE=docker-compose).
# kubernetes: the pods labelled app.kubernetes.io/name=nnserve (NAMESPACE, default kubectl's).
# Prints each replica's answer; exits 1 if any replica did not answer 200.
set -euo pipefail

usage() {
  echo "usage: $0 compose|kubernetes /v2/repository/<call>" >&2
  exit 2
}
[ $# -eq 2 ] || usage
mode=$1
path=$2
case $path in /v2/repository/*) ;; *) usage ;; esac

# Runs inside a replica with its Python (the image has no curl), which reads the admin keys as
# the service does: NNSERVE_ADMIN_KEYS, or the file NNSERVE_ADMIN_KEYS_FILE names (a secret).
call='
import sys, urllib.error, urllib.request
from service.config import Settings
settings = Settings()
if not settings.admin_keys:
    sys.exit("this replica has no admin key (NNSERVE_ADMIN_KEYS or NNSERVE_ADMIN_KEYS_FILE)")
key = settings.admin_keys[0]
url = "http://127.0.0.1:" + str(settings.port) + sys.argv[1]
request = urllib.request.Request(url, method="POST", headers={"Authorization": "Bearer " + key})
try:
    with urllib.request.urlopen(request, timeout=120) as response:
        print(response.status, response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
    sys.exit(1)
'

failed=0
case $mode in
  compose)
    read -r -a compose <<<"${COMPOSE:-docker compose}"
    replicas=$("${compose[@]}" ps -q api)
    [ -n "$replicas" ] || { echo "no running api containers" >&2; exit 1; }
    for container in $replicas; do
      echo "== ${container:0:12}"
      docker exec "$container" python -c "$call" "$path" || failed=1
    done
    ;;
  kubernetes)
    namespace=(${NAMESPACE:+--namespace "$NAMESPACE"})
    replicas=$(kubectl get pods "${namespace[@]}" -l app.kubernetes.io/name=nnserve \
      --field-selector=status.phase=Running -o name)
    [ -n "$replicas" ] || { echo "no running nnserve pods" >&2; exit 1; }
    for pod in $replicas; do
      echo "== $pod"
      kubectl exec "${namespace[@]}" "$pod" -- python -c "$call" "$path" || failed=1
    done
    ;;
  *) usage ;;
esac
exit $failed
