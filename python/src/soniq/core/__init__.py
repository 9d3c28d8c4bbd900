"""Import paths the worker page names (`soniq.core.registry.JobRegistry`)."""
