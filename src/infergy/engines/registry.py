"""The engines by name: each imported only when used, so a missing engine (vLLM, say) costs
nothing until it is asked for; engine options from the command line."""

from __future__ import annotations

import json
from importlib import import_module

from infergy.engines.base import Engine

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
    """The Engine class called `name`, or named `module:Class` (an engine of your own, an
    Engine subclass importable here); UnknownEngineError lists the valid names."""
    target = ENGINES.get(name, name if ":" in name else None)
    if target is None:
        raise UnknownEngineError(
            f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}, or module:Class"
        )
    module, cls = target.split(":", 1)
    try:
        found = getattr(import_module(module), cls)
    except (ImportError, AttributeError) as err:
        raise UnknownEngineError(f"engine {name!r} cannot be imported: {err}") from None
    if not (isinstance(found, type) and issubclass(found, Engine)):
        raise UnknownEngineError(f"engine {name!r} is not an infergy Engine class")
    return found


def new_engine(cls: type[Engine], spec, *, tp: int = 1, **kwargs) -> Engine:
    """An engine of `cls`; `tp` passed only above 1, so that an engine of one's own written
    before tensor parallelism (no `tp` argument) still runs on one GPU."""
    return cls(spec, **kwargs, **({"tp": tp} if tp != 1 else {}))


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
