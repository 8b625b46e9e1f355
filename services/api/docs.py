"""The API reference: ``GET /docs`` renders openapi.yaml with Swagger UI, needing no key and no network.

Hospital networks are often closed, so nothing comes from a CDN: Swagger UI is vendored in
``docs_assets/`` (VENDORED.md there names the version and how to update it) and served from
``/docs/assets/<name>``, and the spec itself from ``/openapi.yaml`` (``docs_assets/openapi.yaml``
links to the repository's ``openapi.yaml``; a built package holds a copy of it). The page has no
inline script and its URLs are relative, so it works behind a path prefix.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Response, send_file

from services.api.errors import Problem

log = logging.getLogger(__name__)

bp = Blueprint("docs", __name__)

ASSETS = Path(__file__).resolve().parent / "docs_assets"
SPEC = Path(__file__).parent / "docs_assets" / "openapi.yaml"
# The files /docs/assets/<name> serves, and their media types: a fixed list, so a name is never a path.
SERVED = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "init.js": "text/javascript",
}
ASSET_MAX_AGE_S = 24 * 3600  # the vendored files change only with a deployment

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CML molecular-response API reference</title>
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<noscript>The API reference needs JavaScript; the document itself is
<a href="openapi.yaml">openapi.yaml</a>.</noscript>
<div id="swagger-ui" data-spec="openapi.yaml"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/init.js"></script>
</body>
</html>
"""


@bp.get("/docs")
def docs_page() -> Response:
    return Response(PAGE, mimetype="text/html", headers={"Cache-Control": "no-cache"})


@bp.get("/docs/assets/<name>")
def docs_asset(name: str) -> Response:
    mimetype = SERVED.get(name)
    if mimetype is None:
        raise Problem(404, "not-found", "Not Found", "No such documentation asset.")
    return send_file(ASSETS / name, mimetype=mimetype, max_age=ASSET_MAX_AGE_S, conditional=True, etag=True)


@bp.get("/openapi.yaml")
def openapi_yaml() -> Response:
    # A missing spec is a packaging fault: send_file raises and the client gets the documented 500.
    response = send_file(SPEC, mimetype="application/yaml", conditional=True, etag=True)
    response.headers["Cache-Control"] = "no-cache"  # revalidate (ETag): the spec changes with a deployment
    return response


def check_assets() -> None:
    """Log (do not fail: the reference is not the service) when a file the reference needs is missing."""
    missing = [p.name for p in (SPEC, *(ASSETS / n for n in SERVED)) if not p.is_file()]
    if missing:
        log.warning("API reference (/docs) files missing from %s: %s", ASSETS, ", ".join(missing))
