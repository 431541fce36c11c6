"""The ops a decode step of transformers' code launches: a layer's, and those outside the layers.

An engine that runs transformers' modeling code eagerly (hf-eager) launches each op as its own
kernel, one by one from the host, so at small batches its step costs what it launches more than
what it reads (on the H100, 0.6-1.0 ms a layer over four models, docs/measurements.md,
2026-12-06). Families differ: a llama's RMSNorm is seven ops, OLMo's LayerNorm without weights
one and two casts, and a llama layer 40 ops to OLMo's 32.

They are counted on a CPU from transformers' own code: one decode step of one token with the
dynamic cache, in bf16 with sdpa attention, of the architecture at small widths (the ops do not
depend on widths) with one layer and with two; every aten op that reaches the dispatcher,
composite ops decomposed, but views and casts to the dtype a tensor already has. The catalog's
counts ship in ops.json (benchmarks/count_ops.py writes it, a test checks it against the
installed transformers); another model is counted when asked, which needs torch and
transformers (`infergy[measure]`). Importing this module loads neither.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from infergy.models.catalog import ModelSpec

TABLE = "ops.json"
LLAMA = "llama-3.1-8b"  # whose counts a model whose ops cannot be counted is taken with
VIEWS = {"view", "_unsafe_view", "_reshape_alias", "reshape", "transpose", "t", "permute",
         "expand", "slice", "select", "unsqueeze", "squeeze", "as_strided", "alias", "detach",
         "split", "split_with_sizes", "unbind", "narrow", "view_as", "chunk", "lift_fresh"}


@dataclass(frozen=True)
class StepOps:
    """A decode step's ops: `per_layer` in each layer, `rest` outside them (embedding, rotary
    tables, the final norm, the logits), and where the figures come from."""

    per_layer: int
    rest: int
    source: str
    counted: bool = True  # False: not counted, a llama's taken (`source` says why)

    def total(self, layers: int) -> int:
        return self.per_layer * layers + self.rest


def step_ops(spec: ModelSpec) -> StepOps:
    """The ops of `spec`'s decode step: the shipped count of a catalog model, else counted now
    (once a process); a llama's, said in `source`, where they cannot be counted."""
    table = _table()
    if spec.path is None and spec.name in table["models"]:
        per_layer, rest = table["models"][spec.name]
        return StepOps(per_layer, rest, f"counted from transformers {table['transformers']}'s "
                                        f"code (shipped)")
    try:
        return _counted(json.dumps(spec.config, sort_keys=True))
    except Exception as err:  # any failure of transformers' code: its message says it
        why = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        return StepOps(*table["models"][LLAMA], f"not counted ({why}): taken as a llama's",
                       counted=False)


@functools.cache
def _table() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(TABLE).read_text(encoding="utf-8"))


@functools.cache
def _counted(config_json: str) -> StepOps:
    import transformers

    per_layer, rest = count_step_ops(json.loads(config_json))
    return StepOps(per_layer, rest, f"counted from transformers {transformers.__version__}'s "
                                    f"code")


def count_step_ops(config: dict[str, Any]) -> tuple[int, int]:
    """(ops a layer, ops outside the layers) of a decode step of the architecture `config` (a
    transformers config.json's fields), counted on the CPU (module doc)."""
    one, two = _ops_of_step(config, 1), _ops_of_step(config, 2)
    return two - one, 2 * one - two


def _ops_of_step(config: dict[str, Any], layers: int) -> int:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging

    class Count(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = func.overloadpacket.__name__
            same_dtype = name == "_to_copy" and kwargs.get("dtype") in (None, args[0].dtype)
            if not (name in VIEWS or name.startswith("sym_") or same_dtype):
                self.ops += 1
            return func(*args, **kwargs)

    small = _small(config, layers)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the small vocabulary's warnings about token ids
    try:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**small),
                                                 dtype=torch.bfloat16).eval()
        model.set_attn_implementation("sdpa")
        with torch.no_grad():
            cache = model(torch.randint(0, 64, (1, 8)), use_cache=True).past_key_values
            with Count() as count:
                model(torch.randint(0, 64, (1, 1)), past_key_values=cache,
                      attention_mask=torch.ones(1, 9, dtype=torch.long), use_cache=True)
    finally:
        logging.set_verbosity(verbosity)
    return count.ops


def _small(config: dict[str, Any], layers: int) -> dict[str, Any]:
    """The architecture at small widths with `layers` layers: the same ops, in milliseconds."""
    out = copy.deepcopy(config)
    heads = int(out["num_attention_heads"])
    kv_heads = int(out.get("num_key_value_heads") or heads)
    out.update(num_hidden_layers=layers, hidden_size=64, num_attention_heads=4, head_dim=16,
               num_key_value_heads=max(1, 4 * kv_heads // heads), intermediate_size=128,
               vocab_size=256)
    for key in ("moe_intermediate_size", "shared_expert_intermediate_size"):
        if out.get(key):
            out[key] = 32
    if isinstance(out.get("layer_types"), list):  # one a layer
        out["layer_types"] = out["layer_types"][:layers]
    if isinstance(out.get("mlp_only_layers"), list):  # layers' indices
        out["mlp_only_layers"] = [i for i in out["mlp_only_layers"] if i < layers]
    return out


__all__ = ["LLAMA", "StepOps", "count_step_ops", "step_ops"]
