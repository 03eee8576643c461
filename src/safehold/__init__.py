"""
safehold: backup and restore for stateful applications.

The package is layered; the folder tree is the architecture:

- ``core``: the pure domain (snapshots, retention, progress, errors). No I/O.
- ``storage``: backends behind one small Protocol (``storage.base.Storage``).
- ``repo``: the engine: chunking, packs, index, keys, backup, restore, check, prune.
- ``service``: use cases, jobs and the scheduler.
- ``api``, ``cli``, ``agent``: entry points.
- ``bootstrap``: the one composition root that wires concrete parts together.
"""

__version__ = "0.1.0"
