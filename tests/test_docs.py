"""The API reference (GET /docs): public, served entirely by the API itself (no CDN), conforming to
openapi.yaml; the spec it renders is the repository's; asset names are never paths."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml
from openapi_core import Config, OpenAPI

from services.api import docs
from tests.test_openapi import GUARDED, NEVER_TRIGGERED, PROBLEM, SPEC_PATH, Exchanges, _json_loads

ASSETS = Path(docs.__file__).parent / "docs_assets"
NO_KEY = {"Authorization": ""}
PAGE, ASSET, SPEC = "/docs", "/docs/assets/{name}", "/openapi.yaml"
MEDIA = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.spec: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]
        self._in_script = tag == "script"
        if tag == "script" and "src" not in a:
            self.inline_scripts += 1
        if "data-spec" in a:
            self.spec = a["data-spec"]

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(
        str(SPEC_PATH), config=Config(extra_media_type_deserializers={PROBLEM: _json_loads})
    )


@pytest.fixture
def call(client, openapi, spec) -> Exchanges:
    return Exchanges(client, openapi, spec)


def _page(call: Exchanges) -> _Links:
    html = call("GET", PAGE, PAGE, 200, mimetype="text/html", headers=NO_KEY).get_data(as_text=True)
    links = _Links()
    links.feed(html)
    return links


def test_page_is_public_and_loads_only_local_files(call):
    links = _page(call)
    assert links.inline_scripts == 0  # a Content-Security-Policy of script-src 'self' suffices
    assert links.spec == "openapi.yaml"
    page_url = "http://api.example/docs"
    for url in links.urls:
        assert not re.match(r"(?i)^\s*([a-z][a-z0-9+.-]*:|//)", url), url  # no scheme, no other host
        assert urlsplit(urljoin(page_url, url)).netloc == "api.example"
    assets = sorted(urljoin(page_url, u).removeprefix("http://api.example") for u in links.urls)
    assert [a for a in assets if a.startswith("/docs/assets/")] == sorted(
        f"/docs/assets/{n}"
        for n in ("favicon-32x32.png", "init.js", "swagger-ui-bundle.js", "swagger-ui.css")
    )
    # init.js starts Swagger UI with the spec relative to the page and never calls the public validator.
    init = (ASSETS / "init.js").read_text()
    assert "validatorUrl: null" in init and "http" not in init.replace("document.baseURI", "")


def test_every_referenced_asset_is_served_as_vendored(call):
    links = _page(call)
    for url in links.urls:
        path = urlsplit(urljoin("http://h/docs", url)).path
        if not path.startswith("/docs/assets/"):
            continue
        name = path.removeprefix("/docs/assets/")
        mimetype = MEDIA[Path(name).suffix]
        resp = call("GET", path, ASSET, 200, mimetype=mimetype, headers=NO_KEY)
        assert resp.get_data() == (ASSETS / name).read_bytes(), name
        assert "max-age=86400" in resp.headers["Cache-Control"] and resp.headers["ETag"]
        again = call.client.get(path, headers={"If-None-Match": resp.headers["ETag"], **NO_KEY})
        assert again.status_code == 304 and again.get_data() == b""


def test_openapi_yaml_is_the_repository_document(call):
    resp = call("GET", SPEC, SPEC, 200, mimetype="application/yaml", headers=NO_KEY)
    assert resp.get_data() == SPEC_PATH.read_bytes()
    assert yaml.safe_load(resp.get_data()) == yaml.safe_load(SPEC_PATH.read_text())
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["ETag"]


def test_reference_answers_with_or_without_any_key(call):
    """Public: no key, a bad key and a scoped key all read it, and none is rate limited or refused."""
    for header in ("", "Bearer not-a-key", "Basic dGVzdHM6dGVzdHM=", "Bearer test-ops-read"):
        for path in (PAGE, SPEC, "/docs/assets/init.js"):
            assert call.client.get(path, headers={"Authorization": header}).status_code == 200, (header, path)


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/unknown.js",
        "/docs/assets/VENDORED.md",  # in the directory, but not a file the page loads
        "/docs/assets/openapi.yaml",
        "/docs/assets/swagger-ui-bundle.js.map",
        "/docs/assets/..%5cdocs.py",
    ],
)
def test_unknown_assets_are_404(call, path):
    resp = call("GET", path, ASSET, 404, headers=NO_KEY)
    assert resp.get_json()["type"] == "/problems/not-found"


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/%2e%2e",  # the route sees "..": not a served name
        "/docs/assets/../auth.py",
        "/docs/assets/../docs.py",
        "/docs/assets/%2e%2e/auth.py",
        "/docs/assets/..%2fauth.py",
        "/docs/assets/%2e%2e%2f%2e%2e%2fauth.py",
        "/docs/assets/..%2f..%2f..%2fopenapi.yaml",
        "/docs/assets//etc/passwd",
        "/docs/assets/%2fetc%2fpasswd",
    ],
)
def test_path_traversal_is_refused(client, path):
    resp = client.get(path, headers=NO_KEY)
    assert resp.status_code == 404 and resp.mimetype == PROBLEM, path
    assert b"def " not in resp.get_data() and b"root:" not in resp.get_data()


def test_all_documented_statuses_are_exercised(call):
    _page(call)
    call("GET", "/docs/assets/init.js", ASSET, 200, mimetype="text/javascript", headers=NO_KEY)
    call("GET", "/docs/assets/nope", ASSET, 404, headers=NO_KEY)
    call("GET", SPEC, SPEC, 200, mimetype="application/yaml", headers=NO_KEY)
    for template in (PAGE, ASSET, SPEC):
        op = call.spec["paths"][template]["get"]
        assert op["security"] == [] and not GUARDED & set(op["responses"]), template
        call.assert_covered("GET", template, NEVER_TRIGGERED)


def test_vendored_files_match_vendored_md():
    """VENDORED.md names the version and the digest of every vendored file; no source maps shipped."""
    text = (ASSETS / "VENDORED.md").read_text()
    table = dict(re.findall(r"^\| `([^`]+)` +\| `([0-9a-f]{64})` \|$", text, re.M))
    assert set(table) == {"swagger-ui-bundle.js", "swagger-ui-bundle.js.LICENSE.txt", "swagger-ui.css",
                          "favicon-32x32.png", "LICENSE", "NOTICE"}  # fmt: skip
    for name, digest in table.items():
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, name
    assert not list(ASSETS.glob("*.map"))
    version = re.search(r"`swagger-ui-dist` (\d+\.\d+\.\d+)", text)
    assert version and f"swagger-ui-dist-{version[1]}.tgz" in text
    assert set(docs.SERVED) <= set(table) | {"init.js"}


def test_package_ships_the_reference():
    """pyproject's package data covers every file the reference serves, and the spec link resolves."""
    import tomllib

    root = SPEC_PATH.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package_dir = root / "services" / "api"
    shipped = {p.resolve() for pattern in patterns["services.api"] for p in package_dir.glob(pattern)}
    for path in [*(ASSETS / n for n in docs.SERVED), docs.SPEC]:
        assert path.resolve() in shipped, path
    assert docs.SPEC.resolve() == SPEC_PATH.resolve() or docs.SPEC.read_bytes() == SPEC_PATH.read_bytes()
