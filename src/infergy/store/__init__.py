"""The results store: SQLite, every point and replay with its run's provenance."""

from infergy.store.exchange import EXPORT_FORMATS, Merged, export, merge
from infergy.store.opening import StoreError, is_sqlite, same_file
from infergy.store.quality import STEADY_CV, STEADY_WINDOW_S
from infergy.store.searches import reusable_max
from infergy.store.store import MEASURED, SCHEMA_VERSION, Store

__all__ = ["EXPORT_FORMATS", "MEASURED", "SCHEMA_VERSION", "STEADY_CV", "STEADY_WINDOW_S",
           "Merged", "Store", "StoreError", "export", "is_sqlite", "merge",
           "reusable_max", "same_file"]
