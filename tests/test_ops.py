"""The ops of a decode step in transformers' code (infergy.models.ops): the shipped table is
what the installed transformers counts, a model outside the catalog is counted, and one that
cannot be counted is a llama's with the reason; hf-eager's transfer prices them, vLLM's the
layers."""

from __future__ import annotations

import json

import pytest

from infergy.estimate.transfer import LAUNCHES, drivers
from infergy.models import get_model, model_names
from infergy.models.local import read_config
from infergy.models.ops import LLAMA, _table, count_step_ops, step_ops

pytest.importorskip("transformers")


def test_the_table_holds_every_catalog_model():
    assert set(_table()["models"]) == set(model_names())


@pytest.mark.parametrize("name", ["llama-3.2-1b", "olmo-7b", "olmoe-1b-7b"])
def test_the_table_is_what_the_installed_transformers_counts(name):
    """One model of each family; a transformers whose code launches other ops fails here:
    write the table again (benchmarks/count_ops.py --write)."""
    import transformers

    table = _table()
    assert tuple(table["models"][name]) == count_step_ops(get_model(name).config), (
        f"the table was counted with transformers {table['transformers']}, this is "
        f"{transformers.__version__}")


def test_an_olmo_layer_launches_fewer_ops_than_a_llama_s():
    """OLMo's LayerNorm without weights is one op and two casts, a llama's RMSNorm seven."""
    llama, olmo = step_ops(get_model("llama-3.1-8b")), step_ops(get_model("olmo-7b"))
    assert (llama.per_layer, olmo.per_layer) == (40, 32)
    assert llama.total(32) == 32 * 40 + llama.rest
    assert "shipped" in llama.source and llama.counted


def test_a_model_outside_the_catalog_is_counted(tmp_path):
    config = dict(get_model("llama-3.2-1b").config, num_hidden_layers=3)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    ops = step_ops(read_config(str(path)))
    assert ops.counted and (ops.per_layer, ops.rest) == tuple(_table()["models"]["llama-3.2-1b"])
    assert "shipped" not in ops.source and "transformers" in ops.source


def test_a_model_transformers_cannot_build_is_a_llama_s_with_the_reason(tmp_path):
    config = dict(get_model("llama-3.2-1b").config, model_type="no-such-architecture")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    ops = step_ops(read_config(str(path)))
    assert not ops.counted and [ops.per_layer, ops.rest] == _table()["models"][LLAMA]
    assert "not counted" in ops.source and "no-such-architecture" in ops.source


def test_hf_eager_s_step_launches_its_ops_and_vllm_s_its_layers():
    spec = get_model("olmo-7b")
    assert drivers(spec, "hf-eager")[LAUNCHES] == 32 * 32 + step_ops(spec).rest
    assert drivers(spec, "vllm")[LAUNCHES] == 32
