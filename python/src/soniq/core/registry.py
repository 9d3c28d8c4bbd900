"""`JobRegistry`: an app's registered jobs (`soniq.registry.Registry`), as the worker page imports it."""

from ..registry import JobRegistry

__all__ = ["JobRegistry"]
