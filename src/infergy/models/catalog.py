"""The architecture catalog: named models as transformers config files shipped in the package.

Each `configs/<name>.json` holds the facts of one public config.json (`config`), where they were
read (`source`), and the published parameter count to check a build against. A model is named
by its catalog name or by a Hugging Face id of the same architecture (`hf_id`, `aliases`), in
any case; a name the catalog once gave it (`former_names`) still names it, with a note
(RenamedModelWarning). Reading the catalog needs neither torch nor transformers; only
`ModelSpec.hf_config` imports transformers.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

_CONFIG_DIR = "configs"


class UnknownModelError(ValueError):
    """A model name that is not in the catalog. The message names the nearest names and lists
    the valid ones."""


class RenamedModelWarning(UserWarning):
    """A model named by a name the catalog has since changed: it still names the model."""


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry: an architecture and where its facts come from."""

    name: str  # catalog name: "llama-3.1-8b"
    hf_id: str | None  # Hugging Face repository the config describes; None for test models
    source: str  # where the config facts were read, and what could not be verified
    published_params: int | None  # total parameters as published; None for test models
    active_params: int | None  # parameters used per token (mixture-of-experts only)
    # The public config.json content, as transformers and vLLM read it. Treat as read-only:
    # hf_config() works on a copy.
    config: dict[str, Any] = field(hash=False)
    published_params_text: str = ""  # the published figure as written, with its source
    # Other Hugging Face ids of this very architecture (an instruct model of the same config),
    # accepted wherever a model is named.
    aliases: tuple[str, ...] = ()
    former_names: tuple[str, ...] = ()  # names the catalog once gave it: still accepted
    path: str | None = None  # a local config.json's (models/local.py), its name too

    @property
    def model_type(self) -> str:
        """transformers' model_type: "llama", "qwen2", "olmo", "olmoe", "qwen3_moe"."""
        return str(self.config["model_type"])

    @property
    def max_context(self) -> int:
        """Longest sequence (prompt + output) in tokens: max_position_embeddings."""
        return int(self.config["max_position_embeddings"])

    @property
    def is_moe(self) -> bool:
        """True for a mixture-of-experts model."""
        return _num_experts(self.config) > 0

    def hf_config(self) -> Any:
        """A transformers `PretrainedConfig` for this architecture (imports transformers)."""
        from transformers import AutoConfig

        return AutoConfig.for_model(**copy.deepcopy(self.config))


def _num_experts(config: dict[str, Any]) -> int:
    return int(config.get("num_experts") or config.get("num_local_experts") or 0)


@functools.cache
def _catalog() -> dict[str, dict[str, Any]]:
    """Every config file's data by catalog name (read once: they ship with the package)."""
    folder = resources.files(__package__).joinpath(_CONFIG_DIR)
    return {entry.name.removesuffix(".json"): json.loads(entry.read_text(encoding="utf-8"))
            for entry in folder.iterdir() if entry.name.endswith(".json")}


@functools.cache
def _names_by_key() -> dict[str, str]:
    """The catalog name of each accepted name, lower-cased: the name, its Hugging Face id and
    its aliases."""
    keys = {}
    for name, data in _catalog().items():
        for key in (data.get("hf_id"), *data.get("aliases", ()), *data.get("former_names", ())):
            if key:
                keys[key.lower()] = name
    return keys | {name: name for name in _catalog()}


def model_names() -> list[str]:
    """Names of every model in the catalog, sorted."""
    return sorted(_catalog())


def get_model(name: str) -> ModelSpec:
    """The catalog entry called `name`, or whose Hugging Face id or alias is `name` (any case),
    or the model a local config.json at `name` describes (models/local.py).

    Raises UnknownModelError, naming the nearest names and listing the valid ones, when there
    is none."""
    if not isinstance(name, str):
        raise UnknownModelError(f"expected a model name, got {name!r}; valid names: "
                                f"{', '.join(model_names())}")
    key = _names_by_key().get(name.strip().lower())
    if key is None:
        from infergy.models import local, shape

        if local.is_config_path(name):
            return local.read_config(name, shape.known_types())
        if name.strip() and Path(name).expanduser().is_dir():  # "" is no folder
            raise UnknownModelError(f"{name}: a folder without config.json; give a model's "
                                    f"config.json (or the folder holding it), or a catalog "
                                    f"name (`infergy models`)")
    if key is None:
        raise UnknownModelError(f"unknown model {name!r}{_nearest(name)}; valid names: "
                                f"{', '.join(model_names())}, the Hugging Face ids "
                                f"`infergy models` shows, or a model's config.json")
    data = _catalog()[key]
    if name.strip().lower() in data.get("former_names", ()):
        _renamed(name.strip().lower(), key)
    return ModelSpec(
        name=key,
        hf_id=data.get("hf_id"),
        source=data["source"],
        published_params=data.get("published_params"),
        active_params=data.get("active_params"),
        config=copy.deepcopy(data["config"]),  # a caller's change stays its own
        published_params_text=data.get("published_params_text", ""),
        aliases=tuple(data.get("aliases", ())),
        former_names=tuple(data.get("former_names", ())),
    )


@functools.cache
def _renamed(old: str, new: str) -> None:
    """Say once a process that `old` is now `new` (RenamedModelWarning)."""
    warnings.warn(f"model {old!r} is now called {new!r} (the catalog names a model for the "
                  f"checkpoint whose shape it is); {old!r} still works", RenamedModelWarning,
                  stacklevel=3)


def _nearest(name: str) -> str:
    """" (did you mean X, Y or Z?)" for the accepted names nearest `name`, or ""."""
    keys = _names_by_key()
    close = difflib.get_close_matches(name.strip().lower(), list(keys), n=3, cutoff=0.6)
    shown = list(dict.fromkeys(keys[k] if "/" not in k else _spelled(k) for k in close))
    if not shown:
        return ""
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    return f" (did you mean {listed}?)"


def _spelled(key: str) -> str:
    """A Hugging Face id as its catalog file spells it (from its lower-cased key)."""
    data = _catalog()[_names_by_key()[key]]
    return next(k for k in (data.get("hf_id"), *data.get("aliases", ())) if k and
                k.lower() == key)
