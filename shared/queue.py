"""Celery wiring shared by the worker (which runs the tasks) and the API (which only sends them,
by name, so that it never imports task code).

Settings follow design-notes.md: late acks with reject-on-worker-lost and a prefetch of one, so a
killed worker's task goes back to the queue; results ignored (nobody reads them; work is tracked in
Redis instead, see GET /v1/tasks/{id}); a bounded visibility timeout. The sweeper, not the broker,
is what makes a lost task come back within seconds.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterable

import orjson
from celery import Celery
from kombu import Exchange, Queue

from shared.config import Settings
from shared.store import REQUEST_CONNECT_TIMEOUT_S, REQUEST_SOCKET_TIMEOUT_S, sentinel_kwargs

RECOMPUTE_PATIENT = "cml.recompute_patient"
# Several patients in one message (the results write's follow-up): Celery's per-message cost, paid once.
RECOMPUTE_PATIENTS = "cml.recompute_patients"
REFRESH_COHORT = "cml.refresh_cohort"

# Separate queues: a burst of patient recomputes never delays a cohort refresh, nor the reverse.
PATIENT_QUEUE = "patients"
COHORT_QUEUE = "cohorts"
QUEUES = (PATIENT_QUEUE, COHORT_QUEUE)
TASK_FOR_KIND = {"patient": RECOMPUTE_PATIENT, "cohort": REFRESH_COHORT}
QUEUE_FOR_KIND = {"patient": PATIENT_QUEUE, "cohort": COHORT_QUEUE}


def task_queues() -> list[Queue]:
    """Every queue the app routes to, declared: a worker started the standard way (``celery -A
    services.worker worker``, no ``-Q``) consumes all of them; ``-Q patients`` still restricts one.

    Without this declaration Celery creates a routed queue on first use only for publishing, and a
    worker without ``-Q`` consumes the default queue alone (``patients``): cohort statistics would
    never refresh. Each queue keeps the exchange and routing key Celery's automatic creation gave
    it (a direct exchange of the queue's own name), so messages already waiting, and API processes
    of the previous release, still land in and read from the same Redis lists.
    """
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]


# The API must answer 503 quickly when Redis is gone, not retry a publish for minutes.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def sentinel_transport_options(settings: Settings, request_path: bool) -> dict:
    """kombu's Sentinel transport (issue 12): the master's name, and the sentinels asked with bounded
    timeouts so that a dead sentinel costs one connect timeout before the next is asked (kombu#813 moved
    that failover between sentinels into redis-py). Workers that stop consuming after a failover are a
    known report (celery#6348, celery#10096): tests/test_failover.py kills the primary under a real
    worker and checks that it consumes again by itself."""
    # kombu hands sentinel_kwargs to redis.sentinel.Sentinel as they are: the store's own options.
    if request_path:
        options = sentinel_kwargs(settings, REQUEST_SOCKET_TIMEOUT_S, REQUEST_CONNECT_TIMEOUT_S)
    else:
        options = sentinel_kwargs(settings, 2.0, 1.0)
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": options}


def make_celery(settings: Settings, main: str = "cml", request_path: bool = False) -> Celery:
    """The Celery app; ``request_path`` (the API, which only publishes) bounds each broker call by the
    request timeouts of shared.store, so a stalled Redis fails a publish in about a second. The
    worker keeps kombu's defaults: its BRPOP waits on the socket by design."""
    app = Celery(main, broker=settings.broker_url, backend=settings.result_backend or None)
    transport: dict = {"visibility_timeout": settings.visibility_timeout_s}
    if request_path:
        transport |= {
            "socket_timeout": REQUEST_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": REQUEST_CONNECT_TIMEOUT_S,
        }
    if settings.broker_url.startswith("sentinel://"):
        transport |= sentinel_transport_options(settings, request_path)
    app.conf.update(
        task_queues=task_queues(),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=PATIENT_QUEUE,
        task_routes={
            RECOMPUTE_PATIENT: {"queue": PATIENT_QUEUE},
            RECOMPUTE_PATIENTS: {"queue": PATIENT_QUEUE},
            REFRESH_COHORT: {"queue": COHORT_QUEUE},
        },
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


def send(
    app: Celery,
    task: str,
    item_id: str | list[str],
    task_id: str | None = None,
    countdown: float | None = None,
) -> None:
    """Enqueue a task for one patient or cohort (or a list of patients: RECOMPUTE_PATIENTS), stamped
    with its enqueue time (ops read the age of the oldest waiting message from it)."""
    headers = {"enqueued_ms": int(time.time() * 1000)}
    # The policy is passed, not only configured: Celery 5.6 publishes the task-sent event with the
    # policy given here, and with none it retries that publish forever while Redis is down (a request
    # that never answers; tests/test_faults.py caught it).
    app.send_task(
        task, args=[item_id], task_id=task_id, countdown=countdown, headers=headers,
        retry=True, retry_policy=PUBLISH_RETRY_POLICY,
    )  # fmt: skip


def same_redis(settings: Settings) -> bool:
    """Whether the broker is the data store's Redis (the default): then the results write's task
    messages can be LPUSHed by its own script (shared.store.FollowUp). Under Sentinel, when the broker
    is the same sentinels' primary (the default, issue 12)."""
    return settings.broker_url == settings.store_broker_url


class TaskMessages:
    """Task messages exactly as ``send`` has kombu's Redis transport store them (Celery's protocol 2:
    the same headers, properties and body; ``delivery_mode`` 2), made without Celery's per-message
    machinery (~0.3 ms and two or three round trips a task), so that the results write can LPUSH them
    in its own script (shared.store.FollowUp). ``send`` stays the way for everything else (the
    sweeper, the worker, other brokers). Celery's task-sent monitoring event is not published for
    these (nothing here consumes events; ops read the queues from Redis, shared/ops.py).

    A message is its task's template (made once by Celery) with the ids filled in: item ids are of the
    id alphabet (shared.schemas.ID_PATTERN) and task ids hex, so none needs escaping in JSON."""

    _EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    # The body's JSON as kombu writes it (json.dumps' separators), split around the item id.
    _BODY = json.dumps([["\0"], {}, _EMBED]).split("\\u0000")

    def __init__(self, app: Celery):
        self.app = app
        self._templates: dict[str, tuple[str, bytes]] = {}

    def _template(self, task: str) -> tuple[str, bytes]:
        found = self._templates.get(task)
        if found is None:
            queue = self.app.conf.task_routes[task]["queue"]
            made = self.app.amqp.create_task_message("-", task, ["-"], None, reply_to=self.app.thread_oid)
            message = {
                "body": "\0body",
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {
                    **made.headers, "id": "\0id", "root_id": "\0id", "argsrepr": "\0argsrepr",
                    "enqueued_ms": "\0stamp",
                },
                "properties": {
                    **made.properties,
                    "correlation_id": "\0id",
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": queue},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": "\0tag",
                },
            }  # fmt: skip
            text = orjson.dumps(message).replace(b"%", b"%%").replace(b'"\\u0000stamp"', b"%(stamp)b")
            for name in (b"body", b"id", b"argsrepr", b"tag"):
                text = text.replace(b"\\u0000" + name + b'"', b"%(" + name + b')b"')
            found = self._templates[task] = (queue, text)
        return found

    # A RECOMPUTE_PATIENTS message's list of ids, as the body's JSON holds it: head, separator, tail.
    _LIST_BODY = json.dumps([[["\0", "\0"]], {}, _EMBED]).split("\\u0000")
    # Celery's argsrepr is saferepr(args, 1024): the plain repr while that is at most 1024 characters.
    ARGSREPR_MAX = 1024
    PATIENTS_PER_MESSAGE = 100
    # Ids are at most 64 characters (shared.schemas.ID_PATTERN): a message holds at least this many.
    MIN_PER_MESSAGE = (ARGSREPR_MAX - 4 + 2) // (64 + 4)

    def shape(self, task: str) -> tuple[str, list]:
        """(list key, arguments for shared.store.TASK_MESSAGES_LUA) to build, in a script, messages of
        ``task`` each carrying a list of ids: the limits, the body's JSON around the ids, and the
        template in pieces, its placeholders (``\\0id``, ``\\0body``, ``\\0argsrepr``, ``\\0tag``) apart."""
        queue, template = self._template(task)
        fill = {name: b"\0" + name for name in (b"id", b"body", b"argsrepr", b"tag")}
        fill[b"stamp"] = str(int(time.time() * 1000)).encode()
        pieces = re.split(rb"(\0(?:id|body|argsrepr|tag))", template % fill)
        head, sep, tail = self._LIST_BODY
        limits = [self.PATIENTS_PER_MESSAGE, self.ARGSREPR_MAX, head, sep, tail]
        return queue, [*limits, len(pieces), *pieces]

    @classmethod
    def ids_for(cls, patients: int) -> list[str]:
        """Enough (task id, delivery tag) pairs, flat, for the messages of up to ``patients`` ids."""
        return [str(uuid.uuid4()) for _ in range(2 * -(-patients // cls.MIN_PER_MESSAGE))]

    def build(self, task: str, items: Iterable[tuple[str, str | None]]) -> list[tuple[str, bytes]]:
        """(list key, message) per (item id, task id or None) to enqueue."""
        queue, template = self._template(task)
        fill = {b"stamp": str(int(time.time() * 1000)).encode()}
        before, after = self._BODY
        out = []
        for item_id, task_id in items:
            fill[b"id"] = (task_id or str(uuid.uuid4())).encode()
            fill[b"body"] = base64.b64encode(f"{before}{item_id}{after}".encode())
            fill[b"argsrepr"] = f"['{item_id}']".encode()
            fill[b"tag"] = str(uuid.uuid4()).encode()
            out.append((queue, template % fill))
        return out
