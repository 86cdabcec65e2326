"""vgi-vision: ImageNet image classification as DuckDB SQL functions.

``attach(con)`` connects a DuckDB connection to a worker (a private subprocess by default) and
registers the worker's functions under the schema ``vision``; ``Client`` speaks to a worker
directly. Every error the package raises derives from ``VgiVisionError``; the ones a user
catches (``WorkerError``, ``TransportError``, ``ModelError``, ...) are importable from here.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "attach", "detach", "Client", "VgiVisionError", "WorkerError",
           "TransportError", "ProtocolError", "BindingError", "DetachedError", "ModelError",
           "BatchFunctionError"]


def __getattr__(name: str):
    # Lazy: the worker process imports this package too and needs neither DuckDB nor httpx.
    if name in ("attach", "detach"):
        from vgi_vision.client import binding

        return getattr(binding, name)
    if name == "Client":
        from vgi_vision.client.client import Client

        return Client
    import vgi_vision.errors

    if name in vgi_vision.errors.PUBLIC_ERRORS:
        return getattr(vgi_vision.errors, name)
    raise AttributeError(name)
