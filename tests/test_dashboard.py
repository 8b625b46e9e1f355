"""The dashboard (GET /dashboard): served by the API with its own files only, under a strict
Content-Security-Policy, and working in a real browser: headless Chromium from Debian (driven by
Playwright, which downloads no browser here) against gunicorn, a real Celery worker and a real Redis.

Screenshots of every view go to the test's tmp_path and to test-output/screenshots/ (gitignored) for
review; UPDATE_DASHBOARD_PNG=1 also refreshes docs/dashboard.png (the README's picture).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from services.api import dashboard
from shared.clinical.reference import response_reference
from shared.clinical.response import IS_LEVEL_THRESHOLDS
from tests.conftest import FULL_KEY
from tests.procs import ROOT, start_gunicorn, stop_process, wait_for
from tests.support import http
from tests.test_docs import call, openapi, spec  # noqa: F401  (fixtures)
from tests.test_openapi import NEVER_TRIGGERED

ASSETS = Path(dashboard.__file__).parent / "dashboard_assets"
NO_KEY = {"Authorization": ""}
PAGE, ASSET, LEVELS = "/dashboard", "/dashboard/assets/{name}", "/v1/reference/response-levels"
SHOTS = ROOT / "test-output" / "screenshots"
READ_KEY, OPS_KEY = "test-status-read", "test-ops-read"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline = 0
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]
        self._script = tag == "script"
        self.inline += tag == "script" and "src" not in a
        self.inline += any(k == "style" or k.startswith("on") for k, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.inline += self._script and bool(data.strip())


# --- the page and its files, through the app ---------------------------------------------------------


def test_page_is_public_strict_and_loads_only_its_own_files(call):  # noqa: F811
    resp = call("GET", PAGE, PAGE, 200, mimetype="text/html", headers=NO_KEY)
    csp = resp.headers["Content-Security-Policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
        assert directive in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp and "http" not in csp
    page = _Page()
    page.feed(resp.get_data(as_text=True))
    assert page.inline == 0  # nothing script-src 'self' would block: no inline script, handler or style
    local = [u for u in page.urls if u not in ("data:,", "docs")]  # the noscript link to /docs
    assert sorted(local) == sorted(f"dashboard/assets/{n}" for n in dashboard.SERVED)
    for name, mimetype in dashboard.SERVED.items():
        got = call("GET", f"/dashboard/assets/{name}", ASSET, 200, mimetype=mimetype, headers=NO_KEY)
        assert got.get_data() == (ASSETS / name).read_bytes()
        assert got.headers["Content-Security-Policy"] == csp and got.headers["ETag"]
        assert "no-cache" in got.headers["Cache-Control"]
        for header, value in dashboard.SECURITY_HEADERS.items():
            assert got.headers[header] == value and resp.headers[header] == value, header
        revalidate = {"If-None-Match": got.headers["ETag"], **NO_KEY}
        again = call("GET", f"/dashboard/assets/{name}", ASSET, 304, mimetype=None, headers=revalidate)
        assert again.get_data() == b"" and again.headers["ETag"] == got.headers["ETag"]
        assert all(again.headers[header] == value for header, value in dashboard.SECURITY_HEADERS.items())
    for bad in ("VENDORED.md", "uPlot.LICENSE", "nope.js"):  # in the directory or not: not served
        assert call("GET", f"/dashboard/assets/{bad}", ASSET, 404, headers=NO_KEY).get_json()["status"] == 404
    for path in ("/dashboard/assets/..%2fdashboard.py", "/dashboard/assets/../dashboard.py"):
        resp = call.client.get(path, headers=NO_KEY)
        assert resp.status_code == 404 and b"def " not in resp.get_data(), path
    # The app calls only this API, by relative URLs, and holds no clinical number of its own.
    js = (ASSETS / "dashboard.js").read_text()
    assert not re.search(r"https?://", js)
    for _, bound in IS_LEVEL_THRESHOLDS:
        assert not re.search(rf"[^\d.]{re.escape(str(float(bound)))}[^\d]", js), bound
    for template in (PAGE, ASSET):
        call.assert_covered("GET", template, NEVER_TRIGGERED)


def test_response_levels_come_from_the_clinical_tables(call):  # noqa: F811
    doc = call("GET", LEVELS, LEVELS, 200).get_json()
    assert doc == response_reference()
    lines = {t["text"] for t in doc["thresholds"]}
    assert lines == {"10%", "1%", "0.1%", "0.01%", "0.0032%", "0.001%"}
    assert [m["months"] for m in doc["milestones"]] == [3, 6, 12]
    call("GET", LEVELS, LEVELS, 401, headers=NO_KEY, valid_request=False)
    call("GET", LEVELS, LEVELS, 403, headers={"Authorization": "Bearer test-results-write"})
    assert call.client.get(LEVELS, headers={"Authorization": f"Bearer {READ_KEY}"}).status_code == 200
    call.assert_covered("GET", LEVELS, NEVER_TRIGGERED | {"429"})


def test_vendored_files_match_vendored_md():
    text = (ASSETS / "VENDORED.md").read_text()
    table = dict(re.findall(r"^\| `([^`]+)` +\| `([0-9a-f]{64})` \|$", text, re.M))
    assert set(table) == {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"}
    for name, digest in table.items():
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, name
    version = re.search(r"`uplot` (\d+\.\d+\.\d+)", text)
    assert version and f"uplot-{version[1]}.tgz" in text
    assert set(dashboard.SERVED) <= set(table) | {"dashboard.js", "dashboard.css"}


# --- in a browser --------------------------------------------------------------------------------------

TKI_START = date(2022, 1, 3)
FOLLOW_MONTHS = (0, 3, 6, 9, 12, 15)
# The second patient: a product switch, a dose change, a stop, a restart and a stop for a TFR, each
# with its own reason; off TKI now. Days from its TKI start, and what the timeline should say.
Q_START = date(2021, 1, 4)
Q_EVENTS = [
    (100, {"type": "tki_changed", "tki": "imatinib", "tki_product": "Glivec", "dose_mg": 400,
           "reason": "other", "reason_text": "pharmacy supply"},
     "product switched", "(other: pharmacy supply)"),
    (200, {"type": "tki_changed", "dose_mg": 300, "reason": "intolerance"},
     "dose 400 mg to 300 mg", "(intolerance)"),
    (400, {"type": "tki_stopped", "reason": "patient_choice"}, "imatinib stopped", "(patient choice)"),
    (450, {"type": "tki_changed", "tki": "imatinib", "dose_mg": 300, "reason": "other",
           "reason_text": "resumed after surgery"},
     "imatinib 300 mg restarted", "(other: resumed after surgery)"),
    (900, {"type": "tki_stopped", "reason": "treatment_free_remission"}, "imatinib stopped",
     "(treatment free remission)"),
]  # fmt: skip
# (day, BCR-ABL1 copies, ABL1 copies): at 365 days an undetectable over 1,500,000 ABL1 copies, deeper
# than a decade below the MR5 line (the axis must reach down to it).
Q_RESULTS = [(90, 5000, 100000), (180, 300, 100000), (365, 0, 1500000), (700, 0, 100000), (1000, 3, 100000)]


def _seed(base: str, tag: str) -> dict:
    """Two cohorts followed 15 months (so the 12-month figure exists) and one patient with a detected
    start, an undetectable result, milestones at 3, 6 and 12 months and a change of TKI."""
    cohorts = {f"DASH-A-{tag}": 8, f"DASH-B-{tag}": 6}
    enrolled = date(2023, 1, 9)
    for cohort, n in cohorts.items():
        for i in range(n):
            pid = f"{cohort}-{i:02d}"
            reg = {"cohorts": [cohort], "enrolled_on": enrolled.isoformat(), "tki": "imatinib",
                   "tki_started_on": "2020-06-01", "dose_mg": 400}  # fmt: skip
            assert http("PUT", f"{base}/v1/patients/{pid}", reg)[0] in (200, 201)
            # The visit reaching MR4.5 (6: never, censored at 15 months, so some are at risk at 12).
            reached = (2, 3, 4, 6)[i % 4] if cohort.startswith("DASH-A") else (3, 4, 6, 6)[i % 4]
            results = [
                {"result_id": f"{pid}-V{v}", "patient_id": pid,
                 "collected_at": (enrolled + timedelta(days=round(m * 30.4375))).isoformat(),
                 "control_gene": "ABL1", "control_copies": 100000,
                 "bcr_abl1_copies": 0 if v >= reached else 40}
                for v, m in enumerate(FOLLOW_MONTHS)
            ]  # fmt: skip
            assert http("POST", f"{base}/v1/assay-results", results)[0] == 202
    pid = f"DASH-P-{tag}"
    reg = {"cohorts": [f"DASH-A-{tag}"], "enrolled_on": "2023-06-01", "tki": "imatinib",
           "tki_started_on": TKI_START.isoformat(), "dose_mg": 400}  # fmt: skip
    assert http("PUT", f"{base}/v1/patients/{pid}", reg)[0] in (200, 201)
    copies = [(92, 6000), (183, 700), (365, 60), (500, 8), (640, 0), (800, 2)]  # per 100,000 ABL1
    results = [
        {"result_id": f"{pid}-R{k}", "patient_id": pid,
         "collected_at": (TKI_START + timedelta(days=d)).isoformat(), "control_gene": "ABL1",
         "control_copies": 100000, "bcr_abl1_copies": c}
        for k, (d, c) in enumerate(copies)
    ]  # fmt: skip
    assert http("POST", f"{base}/v1/assay-results", results)[0] == 202
    # A result entered in error: withdrawn from every computation, still shown (and drawn) as withdrawn.
    when = (TKI_START + timedelta(days=700)).isoformat()
    wrong = {**results[-1], "result_id": f"{pid}-WRONG", "collected_at": when, "bcr_abl1_copies": 500}
    assert http("POST", f"{base}/v1/assay-results", wrong)[0] == 202
    assert http("POST", f"{base}/v1/assay-results", {**wrong, "status": "entered-in-error"})[0] == 202
    event = {"type": "tki_changed", "date": (TKI_START + timedelta(days=420)).isoformat(), "tki": "nilotinib",
             "dose_mg": 600, "reason": "intolerance"}  # fmt: skip
    assert http("POST", f"{base}/v1/patients/{pid}/events", event)[0] == 202
    qid = f"DASH-Q-{tag}"
    reg = {"cohorts": [], "enrolled_on": Q_START.isoformat(), "tki": "imatinib",
           "tki_started_on": Q_START.isoformat(), "dose_mg": 400}  # fmt: skip
    assert http("PUT", f"{base}/v1/patients/{qid}", reg)[0] in (200, 201)
    q_results = [
        {"result_id": f"{qid}-R{k}", "patient_id": qid,
         "collected_at": (Q_START + timedelta(days=d)).isoformat(), "control_gene": "ABL1",
         "control_copies": abl1, "bcr_abl1_copies": c}
        for k, (d, c, abl1) in enumerate(Q_RESULTS)
    ]  # fmt: skip
    assert http("POST", f"{base}/v1/assay-results", q_results)[0] == 202
    for day, body, _, _ in Q_EVENTS:
        body = {**body, "date": (Q_START + timedelta(days=day)).isoformat()}
        assert http("POST", f"{base}/v1/patients/{qid}/events", body)[0] == 202, body
    members = {c: n + (c.startswith("DASH-A")) for c, n in cohorts.items()}

    def settled():
        docs = {}
        for cohort, n in members.items():
            code, doc = http("GET", f"{base}/v1/cohorts/{cohort}/statistics")
            if code != 200 or doc.get("pending") or doc.get("n_evaluable") != n:
                return None
            docs[cohort] = doc
        code, status = http("GET", f"{base}/v1/patients/{pid}/status")
        if code != 200 or status.get("pending") or status.get("results_count") != len(copies):
            return None
        if status.get("results_withdrawn") != 1:
            return None
        if not any(line["tki"] == "nilotinib" for line in status["therapy"]["lines"]):
            return None
        code, status = http("GET", f"{base}/v1/patients/{qid}/status")
        if code != 200 or status.get("pending") or status.get("results_count") != len(Q_RESULTS):
            return None
        if len(status["therapy"]["changes"]) != len(Q_EVENTS) or status["on_tki"] is not False:
            return None
        return docs

    stats = wait_for(settled, 30, interval=0.2, what="the seeded cohorts and patient")
    return {
        "cohorts": list(cohorts),
        "stats": stats,
        "patient": pid,
        "results": len(copies) + 1,
        "off_tki": qid,
    }


@pytest.fixture(scope="module")
def site(redis_url, worker, tmp_path_factory):
    log = tmp_path_factory.mktemp("dashboard") / "api.log"
    proc, base = start_gunicorn(redis_url, log)
    try:
        yield base, {**_seed(base, os.urandom(3).hex()), "log": log}
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def browser():
    # Not importorskip: the test extra installs playwright, and a skipped browser test would hide a
    # broken dashboard in CI.
    from playwright import sync_api

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "no Chromium: scripts/test installs Debian's (ensure_chromium)"
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Tab:
    """A browser tab on the dashboard that records console errors and uncaught exceptions."""

    def __init__(self, browser, base: str, tmp_path: Path, width: int = 1280, height: int = 900):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.base, self.tmp_path = base, tmp_path
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, fragment: str) -> None:
        self.page.goto(f"{self.base}/dashboard{fragment}")

    def shot(self, name: str) -> Path:
        path = self.tmp_path / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser, site, tmp_path):
    t = Tab(browser, site[0], tmp_path)
    yield t
    t.close()


def js_pct(value: float) -> str:
    """A proportion as the page's pct() writes it: (value * 100).toFixed(1) + "%" (JavaScript rounds the
    exact binary value half up, which Python's format would round half to even)."""
    return f"{Decimal(value * 100).quantize(Decimal('0.1'), ROUND_HALF_UP)}%"


def js_ci(est: float, lo: float | None, hi: float | None) -> str:
    return js_pct(est) + ("" if lo is None or hi is None else f" ({js_pct(lo)} to {js_pct(hi)})")


def table_rows(page, selector: str) -> list[list[str]]:
    """The cells of a table's body (text content: a table inside a closed <details> has no inner text)."""
    return page.eval_on_selector(
        selector,
        "t => Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.textContent))",
    )


def assert_points_where_the_api_puts_them(page, base: str, pid: str, count: int) -> list[dict]:
    """Each result is drawn at the API's figure (an undetectable at its upper bound, the sensitivity it
    reached), inside the y range the chart has; the trend joins detected results only. The values are
    read back from the chart's data (uPlot's), not from the page's own count."""
    code, timeline = http("GET", f"{base}/v1/patients/{pid}/results")
    assert code == 200 and len(timeline["results"]) == count
    page.wait_for_selector("figure.timeline .chart[data-y-min]")  # set once uPlot has drawn
    chart = page.locator("figure.timeline .chart")
    lo, hi = float(chart.get_attribute("data-y-min")), float(chart.get_attribute("data-y-max"))
    plotted = {p["id"]: p for p in chart.evaluate("el => el.plotted")}
    assert set(plotted) == {r["result_id"] for r in timeline["results"]}
    for r in timeline["results"]:
        c, drawn = r["classification"], plotted[r["result_id"]]
        assert lo <= drawn["y"] <= hi, (r["result_id"], drawn, lo, hi)
        if r.get("withdrawn") or c is None:
            assert not drawn["inLine"]
            continue
        assert drawn["y"] == (c["is_percent"] if c["detectable"] else c["upper_is_percent"]), r["result_id"]
        assert drawn["inLine"] is c["detectable"], r["result_id"]
    return timeline["results"]


@pytest.mark.timeout(90)  # the browser tests' bound, the server's start and seeding included
def test_views_in_a_browser(tab, site):
    """Every view with a full key: figures equal the API's, every result drawn where the API puts it, no
    console error, no request to another host, and the key taken from the fragment and removed from the
    address bar; neither the key nor a patient id reaches the server's access log."""
    base, seeded = site
    page = tab.page
    tab.open(f"#/cohorts?key={FULL_KEY}")
    page.wait_for_selector("#cohort-table tbody tr")
    assert "key=" not in page.url and page.url.endswith("#/cohorts")
    assert page.evaluate("sessionStorage.getItem('cml.dashboard.apiKey')") == FULL_KEY
    for cohort in seeded["cohorts"]:
        stats = seeded["stats"][cohort]
        k = stats["horizons_months"].index(12.0)
        expected = stats["aalen_johansen"]["estimate"][k]
        assert expected is not None
        cell = page.locator(f'tr[data-cohort="{cohort}"] td.fig12')
        assert float(cell.get_attribute("data-value")) == expected
        aj = stats["aalen_johansen"]
        assert cell.inner_text() == js_ci(expected, aj["lower"][k], aj["upper"][k])
    tab.shot("cohorts")

    a, b = seeded["cohorts"]
    page.click(f'a[href="#/cohorts/{a}"]')
    page.wait_for_selector("#horizon-table")
    assert page.locator("figure .chart canvas").count() == 1
    code, curve = http("GET", f"{base}/v1/cohorts/{a}/curve")
    assert code == 200 and curve["at_risk"]["months"][0] == 0.0
    assert page.locator("#curve-table tbody tr").count() == len(curve["time_months"])
    at_risk = curve["at_risk"]
    assert table_rows(page, "#at-risk-table") == [
        [f"{m:g}", str(n)] for m, n in zip(at_risk["months"], at_risk["n_at_risk"], strict=True)
    ]
    tab.shot("cohort")

    tab.open(f"#/compare/{a}/{b}")
    page.wait_for_selector("#compare-table")
    code, cmp = http("GET", f"{base}/v1/cohorts/compare?a={a}&b={b}")
    assert code == 200
    for test in ("logrank", "gray"):
        p = cmp[test]["p_value"]
        text = page.inner_text(f"#{'logrank' if test == 'logrank' else 'gray'}-p")
        assert text == ("p = < 0.0001" if p < 0.0001 else f"p = {p:.4f}"), (test, text)
    # The chart's text equivalent: both curves point by point, and the numbers at risk on one grid.
    grid = cmp["at_risk"]
    assert grid["months"] and len(grid["a"]) == len(grid["b"]) == len(grid["months"])
    assert table_rows(page, "#compare-at-risk-table") == [
        [f"{m:g}", str(x), str(y)] for m, x, y in zip(grid["months"], grid["a"], grid["b"], strict=True)
    ]
    for side, cohort in (("a", a), ("b", b)):
        code, curve = http("GET", f"{base}/v1/cohorts/{cohort}/curve")
        rows = table_rows(page, f"#curve-table-{side}")
        assert [r[0] for r in rows] == [f"{m:.1f}" for m in curve["time_months"]]
        aj = curve["aalen_johansen"]
        assert [r[1] for r in rows] == [
            js_ci(*v) for v in zip(aj["estimate"], aj["lower"], aj["upper"], strict=True)
        ]
    tab.shot("compare")

    page.fill("#search-id", seeded["patient"])
    page.press("#search-id", "Enter")
    page.wait_for_selector("#result-table tbody tr")
    assert page.url.endswith(f"#/patients/{seeded['patient']}")
    assert page.input_value("#search-id") == ""  # cleared once the view is open
    assert page.locator("#result-table tbody tr").count() == seeded["results"]
    assert page.get_attribute("figure.timeline .chart", "data-points") == str(seeded["results"])
    assert_points_where_the_api_puts_them(page, base, seeded["patient"], seeded["results"])
    assert page.locator("#milestone-table tbody tr").count() >= 3
    assert "nilotinib" in page.inner_text("#event-table")
    assert "< " in page.inner_text("#result-table")  # the undetectable result, at its sensitivity
    assert page.locator("#result-table tr.withdrawn").count() == 1
    tab.shot("patient")

    tab.open("#/ops")
    page.wait_for_selector("#queue-table tbody tr")
    queues = {page.inner_text(f"#queue-table tbody tr:nth-child({i}) th") for i in (1, 2)}
    assert queues == {"patients", "cohorts"}
    assert page.get_attribute("main", "aria-live") is None  # the whole panel is never announced
    first = page.inner_text("#ops-stamp")
    # Marks on the rows and the status region, and a count of the status region's changes: a refresh
    # updates the cells in place (the elements, and the focus in them, survive) and announces nothing
    # when nothing it summarises changed.
    page.evaluate("""() => {
        document.querySelectorAll('#queue-table tbody tr').forEach(r => { r.kept = true; });
        window.statusChanges = 0;
        new MutationObserver(() => { window.statusChanges += 1; }).observe(
            document.getElementById('ops-status'), {childList: true, characterData: true, subtree: true});
    }""")
    # Refreshed every 5 seconds: the stamp changes without a navigation.
    # (Polled from here: wait_for_function evaluates a string, which the page's CSP rightly refuses.)
    wait_for(lambda: page.inner_text("#ops-stamp") != first, 9, interval=0.25, what="the ops refresh")
    assert page.locator("#queue-table tbody tr").count() == 2
    assert page.evaluate("Array.from(document.querySelectorAll('#queue-table tbody tr')).every(r => r.kept)")
    assert page.evaluate("window.statusChanges") == 0
    assert page.get_attribute("#ops-status", "role") == "status"
    tab.shot("ops")

    # Tablet width: the same patient view lays out without a horizontal scroll of the page.
    page.set_viewport_size({"width": 768, "height": 1000})
    tab.open(f"#/patients/{seeded['patient']}")
    page.wait_for_selector("#result-table tbody tr")
    page.wait_for_timeout(300)  # the charts follow a resize after 150 ms
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    tab.shot("patient-768")

    assert tab.errors == []
    hosts = {re.match(r"^(\w+://[^/]+)", u)[1] for u in tab.requests if u.startswith("http")}
    assert hosts == {base}
    # What a server can see of a request (the fragment never leaves the browser) never holds the key.
    sent = [u.split("#")[0] for u in tab.requests]
    assert not [u for u in sent if FULL_KEY in u or "key=" in u], sent
    assert any("/v1/patients/" in u for u in sent)  # the API calls were made (and so were logged)
    access = seeded["log"].read_text()
    assert "/dashboard" in access and "/v1/patients/" in access
    for secret in (seeded["patient"], seeded["off_tki"], FULL_KEY):
        assert secret not in access, secret

    if os.environ.get("UPDATE_DASHBOARD_PNG"):
        page.set_viewport_size({"width": 1280, "height": 900})
        tab.open(f"#/patients/{seeded['patient']}")
        page.wait_for_selector("#result-table tbody tr")
        page.wait_for_timeout(300)
        page.screenshot(path=str(ROOT / "docs" / "dashboard.png"))


@pytest.mark.timeout(60)  # the browser tests' bound, the server's start and seeding included
def test_wrong_key_and_missing_scope_say_so(tab, site):
    page = tab.page
    tab.open("#/cohorts?key=not-a-key")
    page.wait_for_selector(".error-view")
    assert "not accepted (401" in page.inner_text("#message")
    assert page.is_visible("#message")
    # A key without ops:read reads the cohorts but not the ops panel.
    page.fill("#key-input", READ_KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#cohort-table")
    tab.open("#/ops")
    page.wait_for_selector(".error-view")
    assert "403" in page.inner_text("#message") and "ops:read" in page.inner_text("#message")
    tab.shot("forbidden")
    # Keyboard: from the top of the page the skip link comes first, then the views' links.
    tab.open("#/cohorts")
    page.reload()
    page.wait_for_selector("#cohort-table")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "skip-link"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('href')") == "#/cohorts"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector(".error-view")  # Enter on "Operations" opened it: 403 with this key
    assert tab.page.url.endswith("#/ops")
    # The only console errors are the browser's own notes of the refused requests.
    assert all(re.search(r"status of 40[13]", e) for e in tab.errors), tab.errors


@pytest.mark.timeout(90)
def test_therapy_changes_stop_and_undetectables(tab, site):
    """A patient with a product switch, a dose change, a stop, a restart and a stop for a TFR: every
    change is marked with its own reason, the panel says off TKI (no "line null", no drug taken now),
    the 12-month milestone's undetectable result reads "< ", and an undetectable over 1,500,000 ABL1
    copies (deeper than the axis' usual foot) is drawn inside the plot."""
    base, seeded = site
    page, qid = tab.page, seeded["off_tki"]
    tab.open(f"#/patients/{qid}?key={FULL_KEY}")
    page.wait_for_selector("#result-table tbody tr")
    code, status = http("GET", f"{base}/v1/patients/{qid}/status")
    assert code == 200 and status["on_tki"] is False
    stopped = (Q_START + timedelta(days=Q_EVENTS[-1][0])).isoformat()
    assert page.inner_text("#therapy-now") == f"off TKI since {stopped} (last: imatinib 300 mg)"
    assert "null" not in page.inner_text("main")
    rows = table_rows(page, "#event-table")
    assert rows[0] == [Q_START.isoformat(), "imatinib started, line 1"]
    assert len(rows) == 1 + len(Q_EVENTS)
    for (day, _, what, why), (when, text) in zip(Q_EVENTS, rows[1:], strict=True):
        assert when == (Q_START + timedelta(days=day)).isoformat()
        assert what in text and text.endswith(why), (what, why, text)
    results = assert_points_where_the_api_puts_them(page, base, qid, len(Q_RESULTS))
    deep = next(r for r in results if r["control_copies"] == 1500000)
    deepest_line = min(t["is_percent_at_most"] for t in response_reference()["thresholds"])
    assert deep["classification"]["upper_is_percent"] < deepest_line / 10  # below the axis' former foot
    by_id = {r["result_id"]: r for r in results}
    milestones = {m["milestone"]: m for m in status["milestones"]}
    for row in table_rows(page, "#milestone-table"):
        m = milestones[row[0]]
        if m["result_id"] is None:
            continue
        undetectable = not by_id[m["result_id"]]["classification"]["detectable"]
        assert ("< " in row[3]) is undetectable, row
        assert row[3].startswith(f"{m['result_id']} (" + ("< " if undetectable else ""))
    assert any(deep["result_id"] in row[3] and "< " in row[3] for row in table_rows(page, "#milestone-table"))
    tab.shot("patient-off-tki")

    # The skip link: Enter moves the focus to the content; the view and its address stay.
    url = page.url
    page.focus("#skip-link")
    page.keyboard.press("Enter")
    page.wait_for_timeout(200)
    assert page.url == url and page.evaluate("document.activeElement.id") == "main"
    assert page.locator("#result-table").count() == 1 and page.locator(".error-view").count() == 0
    # An in-page anchor reached otherwise (typed, a bookmark) is not a view either.
    page.evaluate("() => { location.hash = '#main'; }")
    page.wait_for_timeout(200)
    assert page.locator("#result-table").count() == 1 and page.locator(".error-view").count() == 0

    # A fragment naming no valid id is refused before any request.
    before = len(tab.requests)
    tab.open("#/patients/a%20b")
    page.wait_for_selector(".error-view")
    assert "Not a valid id" in page.inner_text("#message")
    assert not [u for u in tab.requests[before:] if "/v1/patients/" in u]
    # A key in a link never replaces the tab's key: it is dropped from the address and said so.
    tab.open("#/cohorts?key=someone-elses-key")
    page.wait_for_selector("#cohort-table tbody tr")
    assert page.evaluate("sessionStorage.getItem('cml.dashboard.apiKey')") == FULL_KEY
    assert "ignored" in page.inner_text("#message") and "key=" not in page.url
    assert tab.errors == []
    # One cohort's statistics failing leaves the other rows of the table standing.
    failing, other = seeded["cohorts"]
    problem = '{"type": "about:blank", "title": "Internal Server Error", "status": 500, "detail": "boom"}'
    page.route(
        f"**/v1/cohorts/{failing}/statistics",
        lambda route: route.fulfill(status=500, content_type="application/problem+json", body=problem),
    )
    page.reload()
    page.wait_for_selector(f'tr[data-cohort="{other}"] td.fig12')
    assert "Statistics unavailable" in page.inner_text(f'tr[data-cohort="{failing}"]')
    assert page.locator(".error-view").count() == 0


@pytest.mark.timeout(90)
def test_ops_through_an_outage(tab, site):
    """The ops panel opened while the API does not answer: said once (the alert is not rewritten every
    5 seconds), not mistaken for a key problem, and the panel appears by itself once the API answers."""
    page = tab.page
    page.route("**/v1/ops/queues", lambda route: route.abort())
    tab.open(f"#/ops?key={FULL_KEY}")
    page.wait_for_selector(".error-view")
    assert page.inner_text(".error-view h2") == "The service did not answer"
    page.evaluate("""() => {
        window.alertChanges = 0;
        new MutationObserver(() => { window.alertChanges += 1; }).observe(
            document.getElementById('message'), {childList: true, characterData: true, subtree: true});
    }""")

    def retried_twice() -> bool:
        page.wait_for_timeout(250)  # (the sync API records requests only while it is called)
        return len([u for u in tab.requests if u.endswith("/v1/ops/queues")]) >= 3

    wait_for(retried_twice, 14, interval=0, what="two retries")
    assert page.evaluate("window.alertChanges") <= 1  # the retry's wording, once; then left alone
    page.unroute("**/v1/ops/queues")
    page.wait_for_selector("#queue-table tbody tr", timeout=8000)
    assert page.is_hidden("#message")
    assert all("ERR_FAILED" in e or "Failed to load" in e for e in tab.errors), tab.errors
