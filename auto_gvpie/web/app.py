"""The dashboard: a Starlette app over one home, usable while a daemon works in it.

Safe by default. Without a token it answers only requests addressed to a loopback name (so a
web page elsewhere cannot reach it through DNS rebinding); with a token, every request must
carry it (a header, or the cookie that `?token=` sets). Actions are POST forms checked against
a CSRF cookie (double submit) and the Origin header. Files are served only from `artifacts/`,
by a validated name.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import socket
from typing import Callable
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from auto_gvpie.actions import ActionError, add_task, cancel_task
from auto_gvpie.config import Settings
from auto_gvpie.inbox import InboxError
from auto_gvpie.web.charts import history_charts
from auto_gvpie.web.render import render
from auto_gvpie.web.views import Home

log = logging.getLogger(__name__)

TOKEN_COOKIE = "gvpie_token"
CSRF_COOKIE = "gvpie_csrf"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
DEFAULT_PORT = 8765


class TokenRequired(Exception):
    """A non-loopback address was asked for without a token."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings, *, token: str | None = None, host: str = "127.0.0.1") -> Starlette:
    """The app for `settings.home`. `host` is where it will listen: other than loopback, `token`
    (else the token from gvpie.toml) is required."""
    token = token or settings.token or None
    if not is_loopback(host) and not token:
        raise TokenRequired(f"--serve on {host} (not a loopback address) needs --token, or token in gvpie.toml: "
                            "anyone who can reach the address could otherwise add and cancel tasks")
    home = Home(settings)

    def page(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        html = render(template, csrf=csrf, message=request.query_params.get("msg"), nav=template,
                      task_href=lambda task_id: f"/task/{task_id}", image_src=lambda name: f"/image/{name}", **context)
        response = HTMLResponse(html, status_code)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    def queue(request: Request) -> Response:
        rows = home.queue()
        return page(request, "queue.html", rows=rows, counts=home.counts(rows), health=home.daemon(),
                    tasks_file=settings.tasks_file)

    def queue_fragment(request: Request) -> Response:
        """The live part of the queue page, fetched by its script every few seconds."""
        rows = home.queue()
        return page(request, "queue_rows.html", rows=rows, counts=home.counts(rows), health=home.daemon())

    def queue_json(request: Request) -> Response:
        rows = home.queue()
        return JSONResponse({"counts": home.counts(rows), "tasks": [r.as_json() for r in rows]})

    def task(request: Request) -> Response:
        view = home.task(request.path_params["task_id"])
        if view is None:
            return page(request, "missing.html", 404, what=f"task {request.path_params['task_id']}")
        return page(request, "task.html", view=view)

    def gallery(request: Request) -> Response:
        return page(request, "gallery.html", items=home.gallery())

    def memory(request: Request) -> Response:
        query = request.query_params.get("q", "")
        hits, problem = home.search(query) if query else ([], None)
        return page(request, "memory.html", query=query, hits=hits, problem=problem)

    def history(request: Request) -> Response:
        data = home.history()
        return page(request, "history.html", charts=history_charts(data), history=data)

    def daemon(request: Request) -> Response:
        return page(request, "daemon.html", health=home.daemon())

    def artifact(request: Request) -> Response:
        path = home.artifact(request.path_params["name"])
        if path is None:
            return Response("no such artifact", 404, media_type="text/plain")
        media = {".png": "image/png", ".json": "application/json"}.get(path.suffix, "text/plain; charset=utf-8")
        return FileResponse(path, media_type=media, headers={"X-Content-Type-Options": "nosniff"})

    def image(request: Request) -> Response:
        data = home.scaled_png(request.path_params["name"])
        if data is None:
            return Response("no such image", 404, media_type="text/plain")
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    async def add(request: Request) -> Response:
        form = await _checked_form(request)
        if isinstance(form, Response):
            return form
        fields = {"title": form.get("title", "").strip()}
        if form.get("kind") in ("code", "pixel"):
            fields["kind"] = form["kind"]
        if form.get("description", "").strip():
            fields["description"] = form["description"].strip()
        for key in ("inputs", "tests"):
            lines = [line.strip() for line in form.get(key, "").splitlines() if line.strip()]
            if lines:
                fields[key] = lines
        if form.get("priority", "").strip():
            try:
                fields["priority"] = int(form["priority"])
            except ValueError:
                return _back("/", "priority must be a whole number", 400)
        if not fields["title"]:
            return _back("/", "a task needs a title", 400)
        try:
            added = add_task(settings, fields)
        except (InboxError, OSError) as exc:
            return _back("/", f"not added: {exc}", 400)
        return _back("/", f"added {added.id} ({added.kind}) to {settings.tasks_file.name}")

    async def cancel(request: Request) -> Response:
        form = await _checked_form(request)
        if isinstance(form, Response):
            return form
        task_id = request.path_params["task_id"]
        try:
            done = cancel_task(settings, task_id)
        except (ActionError, InboxError) as exc:
            return _back(f"/task/{task_id}", str(exc), 409)
        return _back(f"/task/{task_id}", done.message)

    routes = [
        Route("/", queue), Route("/queue/rows", queue_fragment), Route("/api/queue", queue_json),
        Route("/task/{task_id}", task), Route("/gallery", gallery), Route("/memory", memory),
        Route("/history", history), Route("/daemon", daemon),
        Route("/artifacts/{name:path}", artifact), Route("/image/{name:path}", image),
        Route("/tasks", add, methods=["POST"]), Route("/task/{task_id}/cancel", cancel, methods=["POST"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Guard, token=token)])
    app.state.home = home
    return app


class _Guard(BaseHTTPMiddleware):
    """Who may ask at all: the token when there is one, else only requests addressed to loopback."""

    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next) -> Response:
        if self.token is None:
            host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
            if not is_loopback(host):
                return Response("this dashboard answers only on a loopback address (start it with --token to "
                                "serve other names)", 403, media_type="text/plain")
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None and _same(given, self.token):
            # Trade the token in the link for a cookie, so it does not stay in the address bar.
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), 303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return response
        header = request.headers.get("authorization", "")
        offered = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")
        if not _same(offered, self.token):
            return Response("a token is required: open the address printed by --serve (it ends in ?token=...)",
                            401, media_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)


async def _checked_form(request: Request):
    """The POSTed form, or a 403 when it does not come from one of our own pages: its CSRF field
    must match the cookie our page set, and a browser's Origin must be this server."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return Response("refused: the form was sent from another site", 403, media_type="text/plain")
    form = await request.form()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not _same(str(form.get("csrf", "")), cookie):
        return Response("refused: the form's CSRF token is missing or wrong (reload the page and try again)",
                        403, media_type="text/plain")
    return {k: str(v) for k, v in form.items()}


def _back(path: str, message: str, status: int = 303) -> Response:
    """After an action: back to the page, with what happened. A refusal says so with its status."""
    if status != 303:
        return Response(message, status, media_type="text/plain; charset=utf-8")
    return RedirectResponse(f"{path}?{urlencode({'msg': message})}", 303)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def serve(settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
          on_ready: Callable[[], None] | None = None) -> None:
    """Run the dashboard under uvicorn until interrupted. The socket is bound here first, so a
    port in use is an OSError the command line can explain, not a log line and an exit."""
    import uvicorn

    app = create_app(settings, token=token, host=host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    log.info("dashboard for %s on %s:%d (%s)", settings.home, host, port,
             "token required" if (token or settings.token) else "loopback names only")
    if on_ready is not None:
        on_ready()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
