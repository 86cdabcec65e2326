"""One error root: every exception class the package defines derives from VgiVisionError, and
the public ones are importable from ``vgi_vision`` without loading worker code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from test_client_imports import worker_modules_loaded

import vgi_vision
from vgi_vision import errors
from vgi_vision.errors import VgiVisionError


def package_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the package, by qualified name."""
    found = {}
    for module_info in pkgutil.walk_packages(vgi_vision.__path__, "vgi_vision."):
        if module_info.name == "vgi_vision.__main__":  # importing it runs the command
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == module_info.name):
                found[f"{module_info.name}.{name}"] = value
    return found


def test_every_exception_class_of_the_package_derives_from_the_root() -> None:
    classes = package_exception_classes()
    assert "vgi_vision.transports.framing.FrameError" in classes  # the walk reaches deep modules
    assert [name for name, cls in classes.items() if not issubclass(cls, VgiVisionError)] == []


@pytest.mark.parametrize("name", errors.PUBLIC_ERRORS)
def test_public_errors_are_exported_once_and_keep_a_builtin_parent(name: str) -> None:
    error = getattr(vgi_vision, name)
    assert error is getattr(errors, name)
    assert name in vgi_vision.__all__
    if error is not VgiVisionError:
        assert issubclass(error, VgiVisionError)
        builtin_parents = [base for base in error.__mro__[1:]
                           if base.__module__ == "builtins" and base is not Exception]
        assert builtin_parents, f"{name} lost its built-in parent"


def test_an_error_the_worker_returns_is_caught_by_the_root_and_by_its_builtin() -> None:
    from vgi_vision.protocol import ErrorKind

    error = vgi_vision.WorkerError(ErrorKind.INVALID_ARGUMENT, "top_k must be 1..1000")
    for parent in (VgiVisionError, RuntimeError):
        with pytest.raises(parent, match="top_k"):
            raise error
    assert error.kind is ErrorKind.INVALID_ARGUMENT


def test_importing_the_public_errors_loads_no_worker_code() -> None:
    names = ", ".join(errors.PUBLIC_ERRORS)
    assert worker_modules_loaded(f"from vgi_vision import {names}") == []
