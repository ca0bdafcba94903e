#!/usr/bin/env bash
# `make cluster-e2e`: the walkthrough on a real single-node Kubernetes cluster on this machine
# (tests/cluster, testbed/realnode). Needs root (kubelet, containerd, iptables, mounts). Installs what
# it needs itself: Debian's containerd, runc, CNI plugins, iptables, buildah and mmdebstrap; the
# node binaries (kubelet, kube-controller-manager, kube-scheduler, kube-proxy, CoreDNS) built from
# their Go modules and the images built by hack/build-images.sh, both cached in ~/.cache/shardkeeper.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="containerd runc containernetworking-plugins iptables conntrack buildah mmdebstrap"
missing=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' $PKGS 2>/dev/null | awk '$2!="installed"{print $1}'; \
          for p in $PKGS; do dpkg-query -W "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "cluster-e2e: installing Debian packages: $(echo $missing)" >&2
  # policy-rc.d 101: the packages' services are not started (the testbed starts its own containerd)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2; }
  if [ "$(trap -p EXIT)" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
echo "cluster-e2e: node binaries (hack/build-k8s.sh node, hack/build-coredns.sh)" >&2
nice -n 10 hack/build-k8s.sh node >/dev/null
nice -n 10 hack/build-coredns.sh >/dev/null
echo "cluster-e2e: images (hack/build-images.sh)" >&2
nice -n 10 hack/build-images.sh >/dev/null
exec .venv/bin/python -m pytest -p no:cacheprovider -m cluster tests/cluster -v --durations=10 "$@"
