"""vgi-vision: ImageNet image classification as DuckDB SQL functions.

``attach(con)`` connects a DuckDB connection to a worker (a private subprocess by default) and
registers the worker's functions under the schema ``vision``; ``Client`` speaks to a worker
directly.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "attach", "detach", "Client"]


def __getattr__(name: str):
    # Lazy: the worker process imports this package too and needs neither DuckDB nor httpx.
    if name in ("attach", "detach"):
        from vgi_vision.client import binding

        return getattr(binding, name)
    if name == "Client":
        from vgi_vision.client.client import Client

        return Client
    raise AttributeError(name)
