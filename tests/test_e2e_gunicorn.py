"""The README's example, over real HTTP: gunicorn serving the app, a real worker, a real Redis."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest

from tests.procs import ROOT, start_gunicorn, stop_process, wait_for
from tests.support import http


def readme_requests() -> list[tuple[str, object]]:
    """The (path, JSON body) of every curl example in the README that sends a body, in order."""
    text = (ROOT / "README.md").read_text()
    pattern = r"localhost:8000(\S+) -H \"\$AUTH\" -H 'Content-Type: application/json' \\\n\s+-d '(.*?)'"
    return [(path, json.loads(body)) for path, body in re.findall(pattern, text, re.S)]


def readme_bodies() -> dict[str, dict]:
    """The JSON bodies of the README's curl examples, keyed by the path they are sent to."""
    return dict(readme_requests())


@pytest.fixture(scope="module")
def gunicorn(redis_url, worker, tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn") / "api.log"
    proc, base = start_gunicorn(redis_url, log)
    yield base, log
    stop_process(proc)


def test_readme_example_changes_status(gunicorn):
    api_base, log = gunicorn
    bodies = readme_bodies()
    register_path = next(p for p in bodies if p.startswith("/v1/patients/"))
    patient_id = register_path.rsplit("/", 1)[1]
    status, _ = http("PUT", api_base + register_path, bodies[register_path])
    assert status == 201
    status, accepted = http("POST", api_base + "/v1/assay-results", bodies["/v1/assay-results"])
    assert status == 202
    version = accepted["tasks"][0]["data_version"]

    def fresh():
        code, doc = http("GET", f"{api_base}/v1/patients/{patient_id}/status")
        return doc if code == 200 and (doc.get("data_version") or 0) >= version else None

    doc = wait_for(fresh, 10, what="status to reflect the README's result")
    assert doc["response_level"] == "MR4.5"
    assert doc["results_count"] == 1
    code, task = http("GET", api_base + accepted["tasks"][0]["href"])
    assert code == 200 and task["state"] == "done"
    # Every event example in the README is accepted as written (coded reasons, known TKI names).
    events = [(p, body) for p, body in readme_requests() if p.endswith("/events")]
    assert len(events) >= 2
    for path, body in events:
        code, answer = http("POST", api_base + path, body)
        assert code == 202, answer
    code, ready = http("GET", api_base + "/readyz")
    assert code == 200 and ready["status"] == "ready"
    # gunicorn's own log (its access log is off) names neither the patient nor the result.
    text = log.read_text()
    assert "Booting worker" in text
    assert patient_id not in text and bodies["/v1/assay-results"]["result_id"] not in text


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("no headless Chromium: scripts/test installs it (ensure_chromium)")


def test_docs_render_the_api_in_a_browser_from_local_files_only(gunicorn, tmp_path):
    """GET /docs in headless Chromium: Swagger UI, from the vendored files, renders every tag's operations
    from /openapi.yaml; the page asks nothing of any other host (closed hospital networks)."""
    api_base, _ = gunicorn
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
        "--virtual-time-budget=10000", "--dump-dom", api_base + "/docs",
    ]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90).stdout
    assert 'class="swagger-ui' in dom and "opblock" in dom, dom[:500]
    for path in (
        "/v1/assay-results",
        "/v1/patients/{patient_id}/status",
        "/v1/cohorts/{cohort_id}/statistics",
    ):
        assert path in dom
    # What the page loads (scripts, styles, images, frames), not the links in the text it shows.
    loaded = re.findall(r'<(?:script|link|img|iframe)\b[^>]*?(?:src|href)="(https?://[^/"]+)', dom)
    assert {urlsplit(url).netloc for url in loaded} <= {urlsplit(api_base).netloc}, loaded
