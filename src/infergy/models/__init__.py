"""Model catalog, FLOPs and bytes per forward.

`get_model("llama-3.1-8b")` gives a `ModelSpec` (the architecture's public config and where it
comes from); `infergy.models.flops` turns one into FLOPs and bytes moved per forward. Importing
this package loads neither torch nor transformers.
"""

from infergy.models.catalog import (
    ModelSpec,
    RenamedModelWarning,
    UnknownModelError,
    get_model,
    model_names,
)
from infergy.models.gpus import Gpu, UnknownGpuError, get_gpu

__all__ = ["Gpu", "ModelSpec", "RenamedModelWarning", "UnknownGpuError", "UnknownModelError",
           "get_gpu", "get_model", "model_names"]
