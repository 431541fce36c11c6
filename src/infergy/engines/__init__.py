"""Engine adapters over real inference engines, by name (registry.py): transformers' eager,
compiled and paged engines (hf.py, paged.py), vLLM (vllm.py), speculative decoding
(speculative.py), and the decoding strategies they run (decoding.py)."""

from infergy.engines.base import Engine, EngineError, Generation
from infergy.engines.decoding import Decoding, DecodingError
from infergy.engines.registry import (
    ENGINES,
    UnknownEngineError,
    engine_class,
    engine_names,
    new_engine,
    parse_options,
)

__all__ = ["ENGINES", "Decoding", "DecodingError", "Engine", "EngineError", "Generation",
           "UnknownEngineError",
           "engine_class", "engine_names", "new_engine", "parse_options"]
