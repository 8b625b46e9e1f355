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
    for name in ("redis", "api", "worker", "nginx", "mllp"):
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["restart"] == "unless-stopped", name


def test_api_worker_and_flower_commands():
    services = compose()["services"]
    api = " ".join(services["api"]["command"])
    assert "gunicorn" in api and "services.api:create_app()" in api
    # The settings scripts/run and the tests use (threaded workers, timeouts, limits), from one place.
    assert "-c services/api/gunicorn_conf.py" in api and " -w " not in api
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


def test_run_script_takes_the_same_gunicorn_settings():
    run = (ROOT / "scripts" / "run").read_text()
    (line,) = re.findall(r"^.*bin/gunicorn\".*$", run, flags=re.M)
    assert "-c services/api/gunicorn_conf.py" in line and " -w " not in line


def test_only_nginx_is_published_and_it_proxies_to_the_api():
    """Slow clients (README, "Operations"): the host reaches nginx, never gunicorn directly."""
    services = compose()["services"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"nginx", "flower", "mllp"}
    nginx = services["nginx"]
    assert nginx["image"].startswith("nginx:")
    assert nginx["ports"] == ["8000:8080"]  # the README's localhost:8000
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    assert "listen 8080;" in conf
    assert "server api:8000 resolve;" in conf and "-b 0.0.0.0:8000" in " ".join(services["api"]["command"])


def test_nginx_buffers_and_bounds_requests_as_the_api_does():
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    directives = dict(re.findall(r"^\s*(\w+) ([^;{]+);", conf, flags=re.M))
    size = directives["client_max_body_size"]
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 == load_settings().max_body_bytes
    assert directives["proxy_request_buffering"] == "on" and directives["proxy_buffering"] == "on"
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout", "proxy_read_timeout"):
        assert directives[name].endswith("s"), name
    assert "$request_uri" not in conf and "$uri" not in conf and "$request " not in conf  # no ids logged
    for code in (400, 408, 413, 414, 502, 503, 504):
        assert f"error_page {code} /_problem/{code};" in conf
        assert f"location = /_problem/{code} {{" in conf
    assert "error_page 494 =431 /_problem/431;" in conf


def test_mllp_listener_service():
    """The MLLP listener: the app's image, the standard command, the test Redis's wiring, its port on the
    host's loopback only (an MLLP port has no authentication; README, "HL7 v2 from the lab")."""
    services = compose()["services"]
    mllp = services["mllp"]
    assert mllp["build"] == services["worker"]["build"] == services["api"]["build"]
    assert mllp["command"] == ["python", "-m", "services.mllp"]
    env = mllp["environment"]
    assert env["REDIS_URL"] == "redis://redis:6379/0" and env["MLLP_HOST"] == "0.0.0.0"
    assert env["MLLP_CALLER"] and int(env["MLLP_PORT"]) == load_settings().mllp_port == 2575
    assert mllp["ports"] == ["127.0.0.1:2575:2575"]
    assert mllp["depends_on"]["redis"]["condition"] == "service_healthy"
    assert mllp["restart"] == "unless-stopped"
    assert (ROOT / "services" / "mllp" / "__main__.py").exists()
    assert load_settings().mllp_host == "127.0.0.1"  # outside a container: loopback unless told otherwise


# --- the `ha` profile (issue 12; README, "High availability (ha profile)") ---------------------------

HA_SERVICES = ("redis-replica", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3")
REPLICAS = ("redis-replica", "redis-replica-2")


def ha_env() -> dict[str, str]:
    lines = (ROOT / "deploy" / "ha" / "ha.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def sentinel_conf() -> list[list[str]]:
    text = (ROOT / "deploy" / "sentinel" / "sentinel.conf").read_text()
    return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_ha_profile_adds_two_replicas_of_the_primary_each_with_its_own_aof():
    """Two replicas with WRITE_REPLICAS=1: once one node is lost for good (the primary, after a failover),
    the new primary still has a replica to confirm writes, so the service acknowledges writes again."""
    services = compose()["services"]
    for name in HA_SERVICES:
        assert services[name]["profiles"] == ["ha"], name
        assert services[name]["healthcheck"]["test"] and services[name]["restart"] == "unless-stopped", name
    for name in services.keys() - set(HA_SERVICES):
        assert "profiles" not in services[name], f"{name} must run without the ha profile too"
    assert int(ha_env()["WRITE_REPLICAS"]) < len(REPLICAS), "losing a node must leave enough replicas"
    priorities, volumes = set(), set()
    for name in REPLICAS:
        replica = services[name]
        command = replica["command"]
        at = command.index("--replicaof")
        assert command[at + 1 : at + 3] == ["redis", "6379"], name
        assert command[command.index("--replica-announce-ip") + 1] == name
        (data,) = [v for v in replica["volumes"] if v.endswith(":/data")]
        assert data.split(":")[0] in compose()["volumes"], name
        volumes.add(data)
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
    assert len(volumes) == len(REPLICAS), "each replica keeps its own AOF"
    for name in ("redis", *REPLICAS):  # any may be the primary after a failover
        cmd = services[name]["command"]
        assert cmd[cmd.index("--appendonly") + 1] == "yes" and cmd[cmd.index("--appendfsync") + 1] == "always"
        assert services[name]["image"] == services["redis"]["image"]
        # Equal priority: the sentinels promote the replica with the highest offset (one that confirmed).
        priorities.add(cmd[cmd.index("--replica-priority") + 1])
    assert len(priorities) == 1 and priorities != {"0"}, priorities


def test_three_sentinels_monitor_the_same_master_with_quorum_two():
    services = compose()["services"]
    conf = sentinel_conf()
    (monitor,) = [line for line in conf if line[:2] == ["sentinel", "monitor"]]
    _, _, master, host, port, quorum = monitor
    assert (host, port, quorum) == ("redis", "6379", "2")
    assert ["sentinel", "resolve-hostnames", "yes"] in conf and [
        "sentinel",
        "announce-hostnames",
        "yes",
    ] in conf
    assert ["port", "26379"] in conf
    volumes = set()
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        svc = services[name]
        command = " ".join(svc["command"])
        # One template, copied to the sentinel's own volume: sentinels rewrite their configuration file.
        assert "./deploy/sentinel/sentinel.conf:/etc/redis/sentinel.conf:ro" in svc["volumes"]
        assert "cp /etc/redis/sentinel.conf /data/sentinel.conf" in command
        assert command.endswith("redis-server /data/sentinel.conf --sentinel")
        (data,) = [v for v in svc["volumes"] if v.endswith(":/data")]
        volumes.add(data)
        assert svc["healthcheck"]["test"] == ["CMD", "redis-cli", "-p", "26379", "ping"]
        assert svc["restart"] == "unless-stopped"
    assert len(volumes) == 3, "each sentinel keeps its own state"
    assert ha_env()["REDIS_SENTINEL_MASTER"] == master


def test_ha_env_points_every_redis_client_at_the_sentinels():
    services = compose()["services"]
    env = ha_env()
    assert env["COMPOSE_PROFILES"] == "ha"
    assert env["WRITE_REPLICAS"] == "1" and int(env["WRITE_REPLICA_TIMEOUT_MS"]) > 0
    sentinels = env["REDIS_SENTINELS"].split(",")
    assert sentinels == ["sentinel-1:26379", "sentinel-2:26379", "sentinel-3:26379"]
    for name in ("api", "worker", "mllp"):
        environment = services[name]["environment"]
        for var in ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "WRITE_REPLICAS", "WRITE_REPLICA_TIMEOUT_MS"):
            assert environment[var].startswith("${" + var + ":-"), (name, var)
        # Without the env file: no sentinels and no replica wait, the single-Redis deployment as before.
        assert environment["REDIS_SENTINELS"] == "${REDIS_SENTINELS:-}"
        assert environment["WRITE_REPLICAS"] == "${WRITE_REPLICAS:-0}"
    # The worker's health check reads through the service's own client, so it follows a failover.
    assert "connect_from_settings(load_settings())" in " ".join(services["worker"]["healthcheck"]["test"])


def test_ha_env_is_what_the_settings_read(monkeypatch):
    for name, value in ha_env().items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.redis_sentinels == (("sentinel-1", 26379), ("sentinel-2", 26379), ("sentinel-3", 26379))
    assert settings.write_replicas == 1 and settings.broker_url.startswith("sentinel://sentinel-1:26379;")
    options = make_celery(settings).conf.broker_transport_options
    assert options["master_name"] == settings.redis_sentinel_master == "cml"
