"""/docs and /redoc work without internet: their HTML names no other host, and every
asset it loads is served by the gateway itself (gateway/docs.py)."""

from __future__ import annotations

import re

import pytest

# Anything that would make the browser reach out: absolute or protocol-relative URLs.
_EXTERNAL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+""")
_ASSET = re.compile(r"""(?:src|href)="([^"]+)"|url: '([^']+)'|spec-url="([^"]+)"|url: "([^"]+)\"""")


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_page_references_no_external_host(client, path):
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not _EXTERNAL.findall(html), _EXTERNAL.findall(html)
    # FastAPI's defaults would name these; the assertion above covers them, spelled out
    # so a regression reads plainly.
    for host in ("cdn.jsdelivr.net", "fonts.googleapis.com", "fastapi.tiangolo.com"):
        assert host not in html


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_every_asset_the_page_loads_is_served_locally(client, path):
    html = client.get(path).text
    assets = {next(g for g in groups if g) for groups in _ASSET.findall(html)}
    assert "/openapi.json" in assets
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts, html  # the page does load its UI from somewhere
    for asset in assets:
        assert asset.startswith("/"), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset  # the real bundle, not an empty file


def test_swagger_ui_does_not_call_the_public_validator(client):
    assert "validatorUrl" in (html := client.get("/docs").text)
    assert '"validatorUrl": null' in html
