"""The BFF app: :func:`create_app` (a Litestar app of its own, what ``issuer bff serve`` runs) and
:class:`BffPlugin` (the same routes and lifespan added to another Litestar app).

::

    from litestar import Litestar
    from issuer.bff.app import BffPlugin
    from issuer.bff.settings import load

    app = Litestar(route_handlers=[...], plugins=[BffPlugin(load())])

The BFF's paths are fixed (``/bff/*``, the ``BFF_UPSTREAMS`` prefixes, and ``BFF_STATIC_DIR`` at
``/``) and its cookies are ``__Host-`` (Path=/), so it is mounted at the root of its origin.
Nothing happens at import time: settings are read by :func:`create_app` (or given), and the
lifespan starts and closes the :class:`~issuer.bff.runtime.BffRuntime`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.plugins import InitPluginProtocol
from litestar.static_files import create_static_files_router

from issuer.bff.health import health_handlers
from issuer.bff.http import HANDLERS
from issuer.bff.proxy import proxy_handlers
from issuer.bff.runtime import BffRuntime
from issuer.bff.settings import BffSettings, load

__all__ = ["BffPlugin", "create_app"]


class BffPlugin(InitPluginProtocol):
    """Adds the BFF's routes, static files and lifespan to a Litestar app."""

    def __init__(self, settings: BffSettings, *, root_health: bool = False) -> None:
        self.settings = settings
        self.root_health = root_health  # also /healthz and /readyz (the app is the BFF alone)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        settings = self.settings

        @asynccontextmanager
        async def lifespan(app: Litestar) -> AsyncIterator[None]:
            runtime = BffRuntime(settings)
            app.state.bff = runtime
            await runtime.start()
            try:
                yield
            finally:
                await runtime.close()

        handlers: list[Any] = [
            *HANDLERS,
            *health_handlers(self.root_health),
            *proxy_handlers(settings.upstreams, settings.max_body_bytes),
        ]
        if settings.static_dir is not None:
            handlers.append(
                create_static_files_router(
                    path="/", directories=[settings.static_dir], html_mode=True, name="bff-static"
                )
            )
        app_config.route_handlers.extend(handlers)
        app_config.lifespan.append(lifespan)
        return app_config


def create_app(settings: BffSettings | None = None) -> Litestar:
    return Litestar(plugins=[BffPlugin(settings or load(), root_health=True)], logging_config=None)
