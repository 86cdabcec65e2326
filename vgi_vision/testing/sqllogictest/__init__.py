"""Run DuckDB sqllogictest files (``.test``) as pytest items; see ``compare`` for now."""

from vgi_vision.testing.sqllogictest.compare import *  # noqa: F403
from vgi_vision.testing.sqllogictest.compare import __all__ as __all__
