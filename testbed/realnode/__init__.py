"""A real single-node Kubernetes cluster on this machine, for ``make cluster-e2e``.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (containerd + runc, a CNI
bridge) and kube-proxy (iptables), every binary built from its Go module or taken from Debian's
packages; images built without a registry by ``hack/build-images.sh``. Unlike ``testbed.cluster``
nothing here stands in for a kubelet: pods are real containers.
"""
