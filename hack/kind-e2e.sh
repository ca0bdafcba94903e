#!/usr/bin/env bash
# The walkthrough on a real cluster: kind (1 control plane + 3 workers sharing a backup directory),
# the image built and loaded, the chart installed, the sample database filled, then a Backup and a
# Restore into a second StatefulSet. Needs docker, kind, kubectl and helm on PATH (hack/install-helm.sh
# prints a helm). Not part of `make test`: the development machines have no Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${KIND_CLUSTER:-shardkeeper}
HELM=${HELM:-helm}
mkdir -p /tmp/shardkeeper-kind/backups && chmod 0777 /tmp/shardkeeper-kind/backups
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config kind-config.yaml
docker build -t shardkeeper:dev .
docker build -f deploy/kind/Dockerfile.sampledb -t shardkeeper-sampledb:dev .
kind load docker-image --name "$CLUSTER" shardkeeper:dev shardkeeper-sampledb:dev
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
"$HELM" upgrade --install shardkeeper helm/shardkeeper -n shardkeeper-system --create-namespace \
  -f deploy/kind/values.yaml --wait --timeout 5m
kubectl -n demo apply -f deploy/kind/sampledb.yaml
kubectl -n demo rollout status statefulset/sampledb --timeout=5m
for i in 0 1 2; do   # some records per node, through the database's own API
  kubectl -n demo exec "sampledb-$i" -c sampledb -- python -c "
import json, urllib.request
body = json.dumps({'count': 2000}).encode()
urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:8480/collections/articles', data=body,
                       headers={'Content-Type': 'application/json'}, method='POST'))"
done
kubectl -n demo apply -f examples/backup.yaml
kubectl -n demo wait --for=condition=Finished backups.shardkeeper.io/first-backup --timeout=10m
kubectl -n demo get backups.shardkeeper.io -o wide
sed 's/name: sampledb$/name: replica/; s/app: sampledb/app: replica/g; s/serviceName: sampledb/serviceName: replica/' \
  deploy/kind/sampledb.yaml | kubectl -n demo apply -f -
kubectl -n demo rollout status statefulset/replica --timeout=5m
kubectl -n demo apply -f - <<YAML
apiVersion: shardkeeper.io/v1alpha1
kind: Restore
metadata: {name: first-restore}
spec:
  backupId: first-backup
  backend: filesystem
  cluster: replica
  nodeMapping: {sampledb-0: replica-0, sampledb-1: replica-1, sampledb-2: replica-2}
YAML
kubectl -n demo wait --for=condition=Finished restores.shardkeeper.io/first-restore --timeout=10m
kubectl -n demo get restores.shardkeeper.io -o wide
