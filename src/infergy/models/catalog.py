"""The architecture catalog: named models as transformers config files shipped in the package.

Each `configs/<name>.json` holds the facts of one public config.json (`config`), where they were
read (`source`), and the published parameter count to check a build against. Reading the
catalog needs neither torch nor transformers; only `ModelSpec.hf_config` imports transformers.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

_CONFIG_DIR = "configs"


class UnknownModelError(ValueError):
    """A model name that is not in the catalog. The message lists the valid names."""


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

    @property
    def model_type(self) -> str:
        """transformers' model_type: "llama", "qwen2", "olmo", "olmoe"."""
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


def _config_files() -> dict[str, Any]:
    folder = resources.files(__package__).joinpath(_CONFIG_DIR)
    return {
        entry.name.removesuffix(".json"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


def model_names() -> list[str]:
    """Names of every model in the catalog, sorted."""
    return sorted(_config_files())


def get_model(name: str) -> ModelSpec:
    """The catalog entry called `name` (case-insensitive), or whose Hugging Face id is `name`.

    Raises UnknownModelError, listing the valid names, when there is none."""
    files = _config_files()
    key = name.strip().lower()
    if key not in files:
        by_hf_id = {
            str(_load(entry).get("hf_id") or "").lower(): entry_name
            for entry_name, entry in files.items()
        }
        if key not in by_hf_id or not key:
            raise UnknownModelError(
                f"unknown model {name!r}; valid names: {', '.join(sorted(files))}"
            )
        key = by_hf_id[key]
    data = _load(files[key])
    return ModelSpec(
        name=key,
        hf_id=data.get("hf_id"),
        source=data["source"],
        published_params=data.get("published_params"),
        active_params=data.get("active_params"),
        config=data["config"],
        published_params_text=data.get("published_params_text", ""),
    )


def _load(entry: Any) -> dict[str, Any]:
    return json.loads(entry.read_text(encoding="utf-8"))
