"""docker-compose.yml (no Docker engine runs here, so its promises are checked as data) and the
scripts' wiring: what deploys is what the tests run."""

from __future__ import annotations

import re

import yaml

from shared.config import load_settings
from shared.queue import QUEUES, make_celery
from tests.procs import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_redis_keeps_an_aof_on_a_volume():
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] in ("everysec", "always")
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "redis-data" in compose()["volumes"]


def test_every_service_has_a_health_check_and_restarts():
    services = compose()["services"]
    for name in ("redis", "api", "worker"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped", name


def test_api_worker_and_flower_commands():
    services = compose()["services"]
    api = " ".join(services["api"]["command"])
    assert "gunicorn" in api and "services.api:create_app()" in api
    assert "--access-logfile" not in api  # paths carry patient ids
    assert services["api"]["environment"]["API_KEYS_FILE"]
    assert services["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    worker = services["worker"]["command"]
    assert worker[:4] == ["celery", "-A", "services.worker", "worker"]
    # Started the standard way: without -Q a worker consumes every queue (shared.queue.task_queues).
    assert "-Q" not in worker and not any(arg.startswith("--queues") for arg in worker)
    assert "flower" in services["flower"]["command"]
    for name in ("api", "worker"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_a_worker_without_q_consumes_every_routed_queue():
    app = make_celery(load_settings())
    consumed = set(app.amqp.queues.consume_from)
    routed = {route["queue"] for route in app.conf.task_routes.values()} | {app.conf.task_default_queue}
    assert consumed == set(QUEUES) and routed <= consumed


def test_scripts_start_workers_on_every_queue():
    run = (ROOT / "scripts" / "run").read_text()
    (celery,) = re.findall(r"^.*celery\" -A services\.worker worker.*$", run, flags=re.M)
    assert "-Q" not in celery and "--queues" not in celery
    assert "pytest" in (ROOT / "scripts" / "test").read_text()
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
