"""
The backup-restore service: use cases, jobs and the scheduler.

Use cases are plain functions over a unit of work (``service.uow``); the
composition root (``safehold.bootstrap``) wires the catalog, the secret box,
the storage factory and the engine. Nothing here knows about HTTP.
"""
