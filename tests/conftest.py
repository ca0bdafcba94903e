"""Shared fixtures. Test tiers, by what they need:

* ``tests/unit``: pure logic and the local filesystem; no network, no processes.
* ``tests/agent``: a real agent service in-process (aiohttp test server) on a real data directory.
* ``tests/e2e``: the real control plane (kube-apiserver + etcd built from Go modules), real agent
  and sample-database processes, and the real operator process. Nothing is mocked there.
"""
