"""The results store: SQLite, every point and replay with its run's provenance."""

from infergy.store.store import (
    MEASURED,
    SCHEMA_VERSION,
    Store,
    StoreError,
    export,
    gpu_name_of,
    merge,
)

__all__ = ["MEASURED", "SCHEMA_VERSION", "Store", "StoreError", "export", "gpu_name_of", "merge"]
