"""The page's server: Starlette on uvicorn, loopback only; live updates as
server-sent events (sse-starlette); the graph is drawn in the browser by
cytoscape.js with the dagre layout, shipped in the package (no internet)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flowrun.engine.protocol import ContainerEngine
from flowrun.settings import RESOURCES
from flowrun.ui.model import flows_snapshot, step_detail, threads

UI_DIR = RESOURCES / "ui"
EVERY = 1.0  # seconds between live updates
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def make_app(engine: ContainerEngine) -> Starlette:
    async def index(request: Request) -> FileResponse:
        return FileResponse(UI_DIR / "index.html")

    async def flows(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(flows_snapshot, engine))

    async def events(request: Request) -> EventSourceResponse:
        async def stream() -> AsyncIterator[dict[str, Any]]:
            while not await request.is_disconnected():
                data = await run_in_threadpool(flows_snapshot, engine)
                yield {"event": "flows", "data": json.dumps(data)}
                await asyncio.sleep(EVERY)
        return EventSourceResponse(stream())

    async def step(request: Request) -> JSONResponse:
        p = request.path_params
        return JSONResponse(await run_in_threadpool(step_detail, engine, p["flow"], p["step"]))

    async def flow_threads(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(threads, engine,
                                                    request.path_params["flow"]))

    # Only a loopback Host: a web page the user visits could otherwise read this one
    # through DNS rebinding (its own name, made to point at 127.0.0.1).
    return Starlette(middleware=[Middleware(TrustedHostMiddleware,
                                            allowed_hosts=list(LOOPBACK_HOSTS))], routes=[
        Route("/", index),
        Route("/api/flows", flows),
        Route("/api/events", events),
        Route("/api/flows/{flow}/steps/{step}", step),
        Route("/api/flows/{flow}/threads", flow_threads),
        Mount("/static", StaticFiles(directory=UI_DIR)),
    ])


def make_server(engine: ContainerEngine, port: int, on_ready: Any = None) -> uvicorn.Server:
    """Loopback only: the page shows messages and logs. `on_ready` gets the bound port."""
    config = uvicorn.Config(make_app(engine), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    if on_ready is not None:
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await original(sockets=sockets)
            on_ready(server.servers[0].sockets[0].getsockname()[1] if server.servers else port)
        server.startup = startup  # type: ignore[method-assign]
    return server


def serve(engine: ContainerEngine, port: int, on_ready: Any = None) -> None:
    """Blocks until Ctrl-C."""
    make_server(engine, port, on_ready).run()
