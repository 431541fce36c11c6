"""The `infergy` command: a thin layer over the library, one module a verb group. Importing
each verb group registers its commands on `app`."""

from infergy.cli import replay, sweep, traces  # noqa: F401  (registers their commands)
from infergy.cli.app import app, main

__all__ = ["app", "main"]
