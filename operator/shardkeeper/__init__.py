"""shardkeeper: backups and restores of sharded stateful clusters on Kubernetes.

The package is layered, lowest first (enforced by import-linter):

* ``api``: pydantic models, the one schema source for CRDs, agent messages and descriptors;
* ``storage`` and ``archive``: where backups live, and how node data becomes chunks;
* ``agent`` and ``coordinator``: the per-node participant and the kopf operator;
* ``cli``: the ``shardkeeper`` command.
"""

__version__ = "0.2.0"
