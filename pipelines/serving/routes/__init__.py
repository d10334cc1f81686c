"""The HTTP routes, one router per concern; ``create_app`` includes :data:`ROUTERS` in order.

A new endpoint is one function on the router it belongs to; it takes the server's state as
``state: State`` (:mod:`pipelines.serving.state`) and raises ``ApiError`` for bad input.
"""

from __future__ import annotations

from pipelines.serving.routes import admin, health, items, recommend

ROUTERS = (recommend.router, items.router, health.router, admin.router)
