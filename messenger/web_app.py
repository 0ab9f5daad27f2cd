"""The chat page at /app/: the static files of messenger/web, served with content-hash ETags.

The page is HTML, CSS and one JavaScript module, shipped inside the package (so the wheel and
the image carry them) and read once when the app is built. Every file is answered with a strong
ETag made from its content and `Cache-Control: no-cache`: a browser keeps its copy and asks
again on each load, and gets a 304 without a body while the file is unchanged, so a new release
shows at the next load. The Content-Security-Policy lets the page talk to its own origin only.
"""

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PACKAGE = "messenger"
FOLDER = "/app/"  # where the page is served
FILES = "web"  # where its files are, in the package
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Nothing from another origin: no CDN, no web fonts, no inline script, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str  # quoted, strong


def load_assets() -> dict[str, Asset]:
    """The page's files by name, `index.html` also under "" (the page is `/app/`)."""
    assets = {}
    for entry in resources.files(PACKAGE).joinpath(FILES).iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:32]
        assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], f'"{digest}"')
    if INDEX not in assets:
        raise RuntimeError(f"{PACKAGE}/{FILES}/{INDEX} is missing: reinstall the package")
    assets[""] = assets[INDEX]
    return assets


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: `*` or any listed tag equal to ours under weak comparison."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


def routes() -> list[Route]:
    """`/app/` and its files; `/app` is sent to `/app/` with a relative Location."""
    assets = load_assets()

    async def serve(request: Request) -> Response:
        asset = assets.get(request.path_params["name"])
        if asset is None:
            raise HTTPException(status_code=404)
        headers = {**HEADERS, "ETag": asset.etag}
        if etag_matches(request.headers.get("if-none-match", ""), asset.etag):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, headers=headers, media_type=asset.content_type)

    async def to_folder(request: Request) -> Response:
        # A path, not a URL built from the Host header: right behind any proxy.
        query = request.url.query
        location = FOLDER + (f"?{query}" if query else "")
        return Response(status_code=308, headers={"Location": location})

    return [
        Route(FOLDER.rstrip("/"), to_folder, methods=["GET"], name="web_app_folder"),
        Route(FOLDER + "{name:path}", serve, methods=["GET"], name="web_app"),
    ]
