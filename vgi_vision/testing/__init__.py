"""Test support shipped with the package: the sqllogictest runner, worker launching, tick harness.

Nothing in the runtime imports this subpackage; it exists so the project's own suite and
downstream projects can run `.test` files against a vgi-vision worker. It needs pytest.
"""
