"""The Celery app: ``celery -A services.worker worker`` consumes every queue the app routes to
(``shared.queue.task_queues``); ``-Q patients`` or ``-Q cohorts`` restricts a worker to one, for
deployments that split the queues across hosts.

Tasks live in modules by job (``patients``: recompute a patient's status; ``cohorts``: refresh a
cohort's statistics); ``sweeper`` runs beside
the consumer in the worker's main process. Both call :mod:`shared` for every rule and Redis key.
"""

from __future__ import annotations

from services.worker import broker
from shared.config import load_settings
from shared.queue import make_celery

broker.install()
settings = load_settings()
app = make_celery(settings, "cml-worker")
celery = app

from services.worker import cohorts, patients, sweeper  # noqa: E402,F401  (registers tasks and signals)
