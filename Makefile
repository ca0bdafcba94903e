# Two commands on a fresh machine:
#   make demo   the main job: local control plane, 3-node sample cluster, a Backup, its status table
#   make test   everything CI runs: lint, types, layering, unit, agent and end-to-end tests
# Both install what they need first (hack/bootstrap.sh): a .venv, and kube-apiserver/kubectl/etcd
# built from Go modules into ~/.cache/shardkeeper (keyed by version; never committed).

.PHONY: demo test bootstrap lint unit e2e crds kind-e2e cluster-e2e values-reference

demo: bootstrap
	.venv/bin/python -m testbed.demo

test: bootstrap
	hack/test.sh

bootstrap:
	hack/bootstrap.sh

lint: bootstrap
	hack/test.sh lint

crds: bootstrap
	.venv/bin/shardkeeper crds --write crds --write helm/shardkeeper/crds

values-reference: bootstrap
	.venv/bin/python -m testbed.values_reference --write

# Laptops and hosted CI with Docker only (needs docker, kind, kubectl, helm): kind cluster, image,
# chart, a Backup and a Restore. Not part of `make test`; these development machines have no Docker.
kind-e2e:
	hack/kind-e2e.sh

# The same walkthrough on a real single-node cluster on this machine (kubelet + containerd + runc,
# images built by buildah from a local Debian base, no Docker, no registry). Needs root; installs its
# Debian packages itself. CI runs it as the last step of `make test`.
cluster-e2e: bootstrap
	hack/cluster-e2e.sh
