"""Engine adapters over real inference engines, by name. Each is imported only when used,
so a missing engine (vLLM, say) costs nothing until it is asked for."""

from __future__ import annotations

import json
from importlib import import_module

from infergy.engines.base import Engine, EngineError, Generation

# name -> "module:class"
ENGINES = {
    "hf-eager": "infergy.engines.hf:HFEager",
    "hf-compiled": "infergy.engines.hf:HFCompiled",
    "hf-paged": "infergy.engines.paged:HFPaged",
    "vllm": "infergy.engines.vllm:VLLM",
    "vllm-eager": "infergy.engines.vllm:VLLMEager",
}


class UnknownEngineError(ValueError):
    pass


def engine_names() -> list[str]:
    return list(ENGINES)


def engine_class(name: str) -> type[Engine]:
    """The Engine class called `name`; UnknownEngineError lists the valid names."""
    if name not in ENGINES:
        raise UnknownEngineError(
            f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}"
        )
    module, cls = ENGINES[name].split(":")
    return getattr(import_module(module), cls)


def parse_options(items: list[str]) -> dict:
    """Engine options from `key=value` strings; a value is JSON where it parses as JSON
    (`true`, `8`, `0.9`), else the string. ValueError names a malformed item."""
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"an engine option is key=value, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


__all__ = ["ENGINES", "Engine", "EngineError", "Generation", "UnknownEngineError",
           "engine_class", "engine_names", "parse_options"]
