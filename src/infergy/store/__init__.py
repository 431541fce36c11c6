"""The results store: SQLite, every point and replay with its run's provenance."""

from infergy.store.quality import STEADY_CV, STEADY_WINDOW_S
from infergy.store.store import (
    MEASURED,
    SCHEMA_VERSION,
    Store,
    StoreError,
    export,
    merge,
)

__all__ = ["MEASURED", "SCHEMA_VERSION", "STEADY_CV", "STEADY_WINDOW_S", "Store", "StoreError",
           "export", "merge"]
