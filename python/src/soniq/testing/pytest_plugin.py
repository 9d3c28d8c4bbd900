"""pytest plugin (opt in: `pytest_plugins = ["soniq.testing.pytest_plugin"]`).

* `soniq_memory`: a fresh in-memory app; with `@pytest.mark.soniq(app="pkg.jobs:app")` an
  in-memory twin of that app, its jobs, hooks and middleware included.
"""

from __future__ import annotations

import importlib

import pytest

from ..app import Soniq


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soniq(app): the Soniq app ('module:attribute') the soniq_memory fixture twins"
    )


def load_app(path: str) -> Soniq:
    module_name, _, attribute = path.partition(":")
    app = getattr(importlib.import_module(module_name), attribute or "app")
    if not isinstance(app, Soniq):
        raise TypeError(f"{path} is a {type(app).__name__}, not a Soniq app")
    return app


@pytest.fixture
def soniq_memory(request: pytest.FixtureRequest) -> Soniq:
    marker = request.node.get_closest_marker("soniq")
    if marker is None or "app" not in marker.kwargs:
        return Soniq.in_memory()
    return load_app(marker.kwargs["app"]).in_memory_twin()
