"""Composition root: the FastAPI factory, its lifespan, middleware, error rendering and health.

It mounts every package's routers (each package lists them in its ``components.py``); like the
other composition roots (docs/architecture.md), it may import ``terminals`` and ``settlement``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import settlement.components
import terminals.components
from cardsvc import components
from cardsvc.api import openapi
from cardsvc.api.errors import HANDLERS, OutageMiddleware
from cardsvc.api.limits import BodyLimitMiddleware, GuardedRoute, LimitTable, declared_limit
from cardsvc.audit import sealer
from cardsvc.bills import endpoints as bills_endpoints
from cardsvc.db import read_sessions
from cardsvc.logging import configure_logging, get_logger
from cardsvc.metrics import HTTP_LATENCY, HTTP_REQUESTS, exposition
from cardsvc.resources import Resources, open_resources
from cardsvc.settings import Settings, get_settings

log = get_logger(__name__)


class MetricsMiddleware:
    """Counts and times requests by route *template* (never the raw path, which holds ids)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(template, method, str(status)).inc()
            HTTP_LATENCY.labels(template, method).observe(time.perf_counter() - started)


health = APIRouter(tags=["health"], route_class=GuardedRoute)


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database, the cache and the HSM all answer."""
    resources: Resources = request.app.state.resources

    async def database() -> None:
        async with resources.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    probes: dict[str, Callable[[], Awaitable[None]]] = {
        "database": database,
        "cache": resources.cache.ping,
        "hsm": resources.hsm.ping,
    }
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready
            checks[name] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ok" if ready else "unavailable", "checks": checks},
    )


@health.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, media_type=content_type)


def domain_routers() -> list[APIRouter]:
    """Every package's routers (its ``components.py``), mounted under /api/v1.

    Terminal traffic first: routing tries the routes in order, and the terminals' requests are
    nearly all of the load. No two routers share a path, so the order changes nothing else.
    """
    return [
        *terminals.components.routers(),
        *components.routers(),
        *settlement.components.routers(),
    ]


def create_app(settings: Settings | None = None, resources: Resources | None = None) -> FastAPI:
    """Build the API. Tests may pass ready ``resources``; otherwise the lifespan opens them."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def sealing(opened: Resources) -> AsyncIterator[None]:
        app.state.resources = opened
        async with sealer.running(
            opened.sessions,
            read_sessions(opened.engine),
            opened.hsm,
            settings.audit_seal_interval_seconds,
        ) as running:
            app.state.audit_sealer = running
            try:
                yield
            finally:
                await bills_endpoints.close_biller_http(app.state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resources is not None:
            async with sealing(resources):
                yield
            return
        configure_logging(settings.log_level, settings.log_json)
        async with open_resources(settings, hsm_now=True) as opened, sealing(opened):
            # Everything built so far (modules, models, routes, pools) lives as long as the
            # process. Frozen, it is no longer walked by every full collection, whose walks
            # stalled a worker and made the slowest online authorizations (bench p99.9).
            gc.collect()
            gc.freeze()
            log.info("api.started", mode=settings.mode.value)
            yield

    app = FastAPI(
        title="Citizen card backend",
        version="0.1.0",
        description=(
            "Issuance, terminal access, payments and settlement of the citizen card (市民卡). "
            "Every error answer is an `ErrorBody`; every body is limited before it is read."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    if resources is not None:
        app.state.resources = resources
    app.state.pin_pads = terminals.components.pin_pads()
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    mounted = [
        ("", health),
        *(("", router) for router in settlement.components.pages()),
        *(("/api/v1", router) for router in domain_routers()),
    ]
    routes: list[tuple[str, GuardedRoute]] = []
    for prefix, router in mounted:
        for route in router.routes:
            if not isinstance(route, GuardedRoute):
                raise TypeError(f"{route}: every router needs route_class=GuardedRoute")
            routes.append((prefix + route.path, route))
    # The mounted routes by full path: what the body limits, /openapi.json and the tests of who
    # each route admits read.
    app.state.route_table = routes
    limits = [(path, route, declared_limit(route, settings)) for path, route in routes]
    for prefix, router in mounted:
        app.include_router(router, prefix=prefix)
    openapi.install(app, openapi.documented(limits))
    # The last added runs first: metrics around everything (they count the 413s and the 503s),
    # then the body limits, before anything reads a byte; outages are answered innermost.
    app.add_middleware(OutageMiddleware)
    app.add_middleware(BodyLimitMiddleware, table=LimitTable((p, lim) for p, _, lim in limits))
    app.add_middleware(MetricsMiddleware)
    return app
