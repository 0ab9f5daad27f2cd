"""The chat page's files at /app/: what is served, how it is cached, and that it ships."""

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from messenger import web_app
from messenger.errors import METHOD_NOT_ALLOWED, NOT_FOUND
from messenger.settings import Settings
from tests.conftest import app_client

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "messenger" / "web"
IGNORED = shutil.ignore_patterns("__pycache__")
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "index.html": "text/html; charset=utf-8",
}


@pytest.fixture
async def page_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings.model_copy(update={"web_app": True})) as client:
        yield client


async def test_the_page_is_served_at_app_slash(page_client: httpx.AsyncClient) -> None:
    response = await page_client.get("/app/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == (WEB / "index.html").read_bytes()
    for testid in ("user-id", "sign-in", "connection", "composer", "send"):
        assert f'data-testid="{testid}"' in response.text


@pytest.mark.parametrize("name", sorted(FILES))
async def test_each_file_has_its_type_a_content_etag_and_must_be_revalidated(
    page_client: httpx.AsyncClient, name: str
) -> None:
    response = await page_client.get(f"/app/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == FILES[name]
    assert response.content == (WEB / name).read_bytes()
    assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["etag"])
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_an_unchanged_file_is_answered_304_without_a_body(
    page_client: httpx.AsyncClient,
) -> None:
    etag = (await page_client.get("/app/app.js")).headers["etag"]
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await page_client.get("/app/app.js", headers={"If-None-Match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b""
        assert again.headers["etag"] == etag
    changed = await page_client.get("/app/app.js", headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200


async def test_the_page_may_talk_to_its_own_origin_only(page_client: httpx.AsyncClient) -> None:
    policy = (await page_client.get("/app/")).headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "connect-src"):
        assert directives[name] == "'self'"


def test_the_files_name_no_other_origin() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = (WEB / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), name


async def test_app_without_the_slash_goes_to_app_slash_whatever_the_host_header(
    page_client: httpx.AsyncClient,
) -> None:
    response = await page_client.get("/app", headers={"Host": "attacker.example"})
    assert response.status_code == 308
    assert response.headers["location"] == "/app/"
    with_query = await page_client.get("/app?lang=en")
    assert with_query.headers["location"] == "/app/?lang=en"


async def test_an_unknown_file_is_the_usual_404(page_client: httpx.AsyncClient) -> None:
    for path in ("/app/nothing.js", "/app/../settings.py", "/app/web/index.html"):
        response = await page_client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": NOT_FOUND}


async def test_other_methods_are_the_usual_405(page_client: httpx.AsyncClient) -> None:
    response = await page_client.post("/app/", json={})
    assert response.status_code == 405
    assert response.json() == {"error": METHOD_NOT_ALLOWED}


async def test_with_web_app_off_there_is_no_page(settings: Settings) -> None:
    async with app_client(settings.model_copy(update={"web_app": False})) as client:
        for path in ("/app/", "/app", "/app/app.js"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.json() == {"error": NOT_FOUND}


def test_the_loaded_files_are_the_package_files() -> None:
    assets = web_app.load_assets()
    assert set(assets) == {"", *FILES}
    assert assets[""] is assets["index.html"]


def test_the_wheel_carries_the_page(tmp_path: Path) -> None:
    """Built from a copy of the sources, so no build output lands in the work tree."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "messenger", source / "messenger", ignore=IGNORED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
    subprocess.run(
        [*build, "--wheel-dir", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("messenger-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"messenger/web/{name}" for name in FILES} <= names
