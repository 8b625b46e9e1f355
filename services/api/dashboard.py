"""The dashboard: ``GET /dashboard``, a read-only single-page app over the JSON API, and its files.

The page holds no data: it is public like /docs, and every figure it shows comes from the JSON API with
the key the user types in (``status:read``; the ops panel ``ops:read``), so the API's scopes and audit
apply unchanged. Views live in the URL fragment (``#/patients/<id>``), which a browser never sends: no
patient id reaches a server log through the page.

Nothing comes from a CDN (hospital networks are often closed): the chart library (uPlot) is vendored
in ``dashboard_assets/`` (VENDORED.md there: version, digests, and why uPlot rather than matplotlib
SVG), and every response carries a Content-Security-Policy that allows this origin only, no inline
script, and no framing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Response, send_file

from services.api.errors import Problem

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__)

ASSETS = Path(__file__).resolve().parent / "dashboard_assets"
# The files /dashboard/assets/<name> serves, and their media types: a fixed list, so a name is never a path.
SERVED = {
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}

# 'self' only: no CDN, no inline script or style element, no plugin, no framing (clickjacking), no form
# posting anywhere. uPlot sizes its elements through the CSSOM (element.style), which style-src does not
# govern; the API calls are same-origin (connect-src).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # The fragment is never sent in a Referer, but the page has no reason to send one at all.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CML molecular response: dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="dashboard/assets/uPlot.min.css">
<link rel="stylesheet" href="dashboard/assets/dashboard.css">
</head>
<body>
<a class="skip" href="#main" id="skip-link">Skip to content</a>
<header class="top">
  <h1 class="brand"><a href="#/cohorts">CML molecular response</a></h1>
  <nav aria-label="Views">
    <ul>
      <li><a href="#/cohorts" data-nav="cohorts">Cohorts</a></li>
      <li><a href="#/ops" data-nav="ops">Operations</a></li>
    </ul>
  </nav>
  <form id="search" role="search" autocomplete="off">
    <label for="search-id">Patient id</label>
    <input id="search-id" name="patient" type="search" spellcheck="false" required>
    <button type="submit">Open</button>
  </form>
  <form id="key-form" autocomplete="off">
    <label for="key-input">API key</label>
    <input id="key-input" name="key" type="password" spellcheck="false" autocomplete="off">
    <button type="submit">Use key</button>
    <button type="button" id="forget-key">Forget key</button>
  </form>
</header>
<div id="message" role="alert" aria-live="assertive" hidden></div>
<main id="main" tabindex="-1">
<noscript>The dashboard needs JavaScript; the JSON API is documented at <a href="docs">/docs</a>.</noscript>
</main>
<script src="dashboard/assets/uPlot.iife.min.js"></script>
<script src="dashboard/assets/dashboard.js"></script>
</body>
</html>
"""


def _secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/dashboard")
def page() -> Response:
    return _secured(Response(PAGE, mimetype="text/html", headers={"Cache-Control": "no-cache"}))


@bp.get("/dashboard/assets/<name>")
def asset(name: str) -> Response:
    mimetype = SERVED.get(name)
    if mimetype is None:
        raise Problem(404, "not-found", "Not Found", "No such dashboard asset.")
    path = ASSETS / name
    # Revalidated on every load (no-cache, ETag: a 304 is a few bytes): the page is no-cache too, and a
    # cached dashboard.js from the previous deployment must never run against the new page or API.
    return _secured(send_file(path, mimetype=mimetype, max_age=None, conditional=True, etag=True))


def check_assets() -> None:
    """Log (do not fail: the dashboard is not the service) when a file the page needs is missing."""
    missing = [n for n in SERVED if not (ASSETS / n).is_file()]
    if missing:
        log.warning("dashboard (/dashboard) files missing from %s: %s", ASSETS, ", ".join(missing))
