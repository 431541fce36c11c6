"""The `infergy` command: a thin layer over the library, one module a verb group. Importing
each verb group registers its commands on `app`."""

# In the order `infergy --help` lists them.
from infergy.cli import env, measure, models, replay, serve, sweep, results  # noqa: F401, I001
from infergy.cli import advise, calibrate, estimate, report, traces  # noqa: F401
from infergy.cli.app import app, main

__all__ = ["app", "main"]
