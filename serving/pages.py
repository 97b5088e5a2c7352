"""The pages the service serves to a browser: /ui (the chat page with the
Auto model picker, answering through /v1/chat/completions) and /dashboard
(analytics drawn from /admin/dashboard). Their HTML, JavaScript and CSS are
in serving/static/ and load nothing from other hosts."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
PAGES = {"/ui": "ui.html", "/dashboard": "dashboard.html"}


def add_pages(app: FastAPI) -> None:
    """Mount the static files under /assets and the pages at their paths."""
    app.mount("/assets", StaticFiles(directory=STATIC), name="assets")
    for path, name in PAGES.items():
        app.add_api_route(path, _page(STATIC / name), methods=["GET"], include_in_schema=False)
        app.add_api_route(path + "/", lambda p=path: RedirectResponse(p), methods=["GET"], include_in_schema=False)


def _page(file: Path):
    def page() -> FileResponse:
        return FileResponse(file, media_type="text/html", headers={"cache-control": "no-cache"})
    return page
