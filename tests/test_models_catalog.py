"""The model catalog: every entry builds with transformers and matches its published size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from infergy.models import ModelSpec, UnknownModelError, get_model, model_names
from infergy.models.flops import active_param_count, param_count

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CATALOG = [
    "deepseek-r1-distill-qwen-1.5b",
    "deepseek-r1-distill-qwen-32b",
    "llama-3.1-8b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "olmo-1b",
    "olmo-7b",
    "olmoe-1b-7b",
    "qwen3-30b-a3b",
    "smollm2-135m",
    "tiny",
    "tiny-draft",
]
SRC = Path(__file__).resolve().parents[1] / "src"


def build_on_meta(spec: ModelSpec):
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(spec.hf_config())


def test_model_names_lists_the_catalog_sorted():
    assert model_names() == CATALOG


def test_every_config_file_has_the_fields_and_facts():
    folder = resources.files("infergy.models").joinpath("configs")
    for name in CATALOG:
        data = json.loads(folder.joinpath(f"{name}.json").read_text(encoding="utf-8"))
        assert data["source"].strip(), name
        assert data["published_params_text"].strip(), name
        config = data["config"]
        for key in ("model_type", "architectures", "hidden_size", "intermediate_size",
                    "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                    "vocab_size", "max_position_embeddings", "tie_word_embeddings"):
            assert key in config, (name, key)
        if name.startswith("tiny"):
            assert data["hf_id"] is None and data["published_params"] is None
        else:
            assert "/" in data["hf_id"] and data["published_params"] > 0
        spec = get_model(name)
        assert (spec.active_params is not None) == spec.is_moe


@pytest.mark.parametrize("name", CATALOG)
def test_builds_on_meta_with_the_published_parameter_count(name):
    spec = get_model(name)
    model = build_on_meta(spec)
    # parameters() yields a tied embedding once, as published counts do.
    built = sum(p.numel() for p in model.parameters())
    assert built == param_count(spec)  # the analytic count is exact
    if spec.published_params is not None:
        assert built == pytest.approx(spec.published_params, rel=0.01), spec.published_params_text


def test_llama_3_1_8b_is_8_03_billion():
    built = sum(p.numel() for p in build_on_meta(get_model("llama-3.1-8b")).parameters())
    assert round(built / 1e9, 2) == 8.03


@pytest.mark.parametrize("name", [n for n in CATALOG if get_model(n).is_moe])
def test_moe_active_parameters(name):
    spec = get_model(name)
    model = build_on_meta(spec)
    total = sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    k, experts = spec.config["num_experts_per_tok"], spec.config["num_experts"]
    active = total - expert * (experts - k) / experts
    assert active == active_param_count(spec)
    # OLMoE publishes "1.3B" active: two significant figures, hence 2%.
    assert active == pytest.approx(spec.active_params, rel=0.02)


@pytest.mark.parametrize("name", CATALOG)
def test_hf_config_carries_the_catalog_values(name):
    spec = get_model(name)
    cfg = spec.hf_config()
    raw = spec.config
    assert cfg.model_type == raw["model_type"]
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "max_position_embeddings",
                "tie_word_embeddings", "num_experts", "num_experts_per_tok", "head_dim"):
        if key in raw:
            assert getattr(cfg, key) == raw[key], key
    # transformers 5 folds rope_theta and rope_scaling into rope_parameters.
    assert cfg.rope_parameters["rope_theta"] == raw["rope_theta"]
    for key, value in (raw.get("rope_scaling") or {}).items():
        assert cfg.rope_parameters[key] == value, key
    assert spec.max_context == raw["max_position_embeddings"]


def test_hf_config_leaves_the_catalog_dict_alone():
    spec = get_model("llama-3.1-8b")
    before = json.dumps(spec.config, sort_keys=True)
    spec.hf_config().rope_parameters["factor"] = 1.0
    assert json.dumps(spec.config, sort_keys=True) == before


def test_llama_3_1_8b_facts():
    spec = get_model("llama-3.1-8b")
    assert spec.hf_id == "meta-llama/Llama-3.1-8B"
    assert spec.max_context == 131072
    assert not spec.is_moe
    rope = spec.hf_config().rope_parameters
    assert rope["rope_type"] == "llama3" and rope["factor"] == 8.0 and rope["rope_theta"] == 5e5


def test_olmoe_is_moe():
    spec = get_model("olmoe-1b-7b")
    assert spec.is_moe and spec.active_params == 1_300_000_000
    assert spec.config["num_experts"] == 64 and spec.config["num_experts_per_tok"] == 8


def test_get_model_accepts_any_case_and_the_hf_id():
    assert get_model("Llama-3.1-8B").name == "llama-3.1-8b"
    assert get_model("allenai/OLMoE-1B-7B-0924").name == "olmoe-1b-7b"


@pytest.mark.parametrize("bad", ["nope", "", "llama"])
def test_unknown_model_lists_valid_names(bad):
    with pytest.raises(UnknownModelError) as info:
        get_model(bad)
    assert isinstance(info.value, ValueError)
    for name in CATALOG:
        assert name in str(info.value)


def test_importing_the_catalog_loads_neither_torch_nor_transformers():
    code = (
        "import sys, infergy.models, infergy.models.flops\n"
        "infergy.models.get_model('llama-3.1-8b')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("given", "name"), [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("META-LLAMA/llama-3.1-8b-instruct", "llama-3.1-8b"),
    ("meta-llama/Meta-Llama-3.1-8B", "llama-3.1-8b"),
    ("  meta-llama/Llama-3.2-1B-Instruct ", "llama-3.2-1b"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"),
    ("allenai/olmoe-1b-7b-0924-instruct", "olmoe-1b-7b"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "deepseek-r1-distill-qwen-32b"),
    ("TINY", "tiny"),
])
def test_hugging_face_ids_and_aliases_name_their_catalog_model_in_any_case(given, name):
    assert get_model(given).name == name


def test_every_alias_names_one_model_and_is_listed_by_infergy_models():
    from typer.testing import CliRunner

    from infergy.cli import app

    seen: dict[str, str] = {}
    for name in CATALOG:
        spec = get_model(name)
        for alias in filter(None, (spec.hf_id, *spec.aliases)):
            assert "/" in alias and alias.lower() not in seen, alias
            assert alias.lower() not in CATALOG
            seen[alias.lower()] = name
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    said = " ".join(result.output.split())
    for alias in ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
                  "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert alias in said


@pytest.mark.parametrize(("typed", "nearest"), [
    ("llama-3.1-8", "llama-3.1-8b"),
    ("lama-3.2-1b", "llama-3.2-1b"),
    ("meta-llama/Llama-3.1-8B-Instruc", "meta-llama/Llama-3.1-8B-Instruct"),
    ("smollm2-13m", "smollm2-135m"),
    ("olmoe-1b7b", "olmoe-1b-7b"),
])
def test_a_mistyped_model_gets_the_nearest_names(typed, nearest):
    with pytest.raises(UnknownModelError) as info:
        get_model(typed)
    message = str(info.value)
    assert message.startswith(f"unknown model {typed!r} (did you mean {nearest}")
    assert "valid names: deepseek-r1-distill-qwen-1.5b, deepseek-r1-distill-qwen-32b" in message


def test_a_model_name_that_is_not_text_is_an_unknown_model():
    for bad in (None, 3, ["tiny"], {"a": 1}):
        with pytest.raises(UnknownModelError, match="expected a model name"):
            get_model(bad)


def test_the_cli_takes_hugging_face_ids_wherever_a_model_is_named(tmp_path):
    """measure and estimate resolve an id to its catalog name (what the stores hold); a typo
    is exit 2 with the nearest names."""
    from typer.testing import CliRunner

    from infergy.cli import app

    runner = CliRunner()
    # measure: refused before any work, by the catalog model's own context.
    result = runner.invoke(app, ["measure", "-m", "HuggingFaceTB/SmolLM2-135M-Instruct",
                                 "--device", "cpu", "-i", "999999"])
    assert result.exit_code == 2 and "smollm2-135m's context" in " ".join(
        result.output.split())
    typo = runner.invoke(app, ["measure", "-m", "smollm2-13m", "--device", "cpu"])
    assert typo.exit_code == 2 and "did you mean smollm2-135m" in " ".join(typo.output.split())
    estimate = runner.invoke(app, ["estimate", "-t", "translation", "-m",
                                   "meta-llama/Llama-3.1-8B-Instruct", "-e", "hf-eager",
                                   "--gpu", "h100", "--json"])
    same = runner.invoke(app, ["estimate", "-t", "translation", "-m", "llama-3.1-8b", "-e",
                               "hf-eager", "--gpu", "h100", "--json"])
    assert estimate.exit_code == same.exit_code
    if same.exit_code == 0:  # a shipped H100 profile of llama-3.1-8b
        assert json.loads(estimate.output) == json.loads(same.output)
        assert json.loads(estimate.output)["model"] == "llama-3.1-8b"
    replay = runner.invoke(app, ["replay", "-t", "translation", "-m", "llama-3.1-8", "-e",
                                 "hf-eager"])
    assert replay.exit_code == 2 and "did you mean llama-3.1-8b" in " ".join(
        replay.output.split())


def test_a_renamed_model_s_former_name_still_names_it_with_a_note():
    """qwen2-1.5b was DeepSeek-R1-Distill-Qwen-1.5B's shape under its architecture's name."""
    from typer.testing import CliRunner

    from infergy.cli import app
    from infergy.models import RenamedModelWarning
    from infergy.models.catalog import _renamed

    _renamed.cache_clear()  # said once a process
    with pytest.warns(RenamedModelWarning, match="now called 'deepseek-r1-distill-qwen-1.5b'"):
        assert get_model("Qwen2-1.5B").name == "deepseek-r1-distill-qwen-1.5b"
    assert get_model("qwen2-1.5b").config == get_model("deepseek-r1-distill-qwen-1.5b").config
    listed = CliRunner().invoke(app, ["models"], env={"COLUMNS": "300"}).output
    assert "deepseek-r1-distill-qwen-1.5b (formerly qwen2-1.5b)" in listed
    _renamed.cache_clear()
    said = CliRunner().invoke(app, ["estimate", "--trace", "azure-code-2023", "--model",
                                    "qwen2-1.5b"]).output
    assert "infergy: note: model 'qwen2-1.5b' is now called" in " ".join(said.split())


MIXTRAL = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096,
           "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
           "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": False}


def test_a_local_config_describes_a_model_the_catalog_does_not_hold(tmp_path):
    """Mixtral-8x7B's config.json (model_type unknown here: counted as a llama-like decoder):
    46.7B parameters, 12.9B active, as Mistral AI publishes them."""
    folder = tmp_path / "mixtral"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MIXTRAL))
    spec = get_model(str(folder))
    assert spec.name == str(folder / "config.json") == spec.path
    assert spec.is_moe and "not one infergy knows" in spec.source
    assert round(param_count(spec) / 1e9, 1) == 46.7
    assert round(active_param_count(spec) / 1e9, 1) == 12.9
    assert get_model(spec.name).config == MIXTRAL  # its name names it again (a worker's)


QWEN15_MOE = {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
              "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
              "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24,
              "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60,
              "num_experts_per_tok": 4, "decoder_sparse_step": 1, "mlp_only_layers": [],
              "vocab_size": 151936, "max_position_embeddings": 8192,
              "tie_word_embeddings": False}


def test_a_shared_expert_is_counted(tmp_path):
    """Qwen1.5-MoE-A2.7B's config.json: 14.3B parameters, 2.7B active, as Qwen publishes them;
    its shared expert, which every token goes through, is a third of the active ones."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN15_MOE))
    spec = get_model(str(path))
    assert round(param_count(spec) / 1e9, 1) == 14.3
    assert round(active_param_count(spec) / 1e9, 1) == 2.7


@pytest.mark.parametrize(("change", "said"), [
    ({"kv_lora_rank": 512}, "field 'kv_lora_rank': expected nothing: multi-head latent "
                            "attention (DeepSeek-V2 and V3) is not modelled, got 512"),
    ({"n_routed_experts": 64}, "a DeepSeek-style mixture of experts"),
    ({"mlp_only_layers": [40]}, "field 'mlp_only_layers': expected a list of layer indices, "
                                "0 to 31, got [40]"),
    ({"decoder_sparse_step": 0}, "field 'decoder_sparse_step': expected a whole number"),
    ({"num_hidden_layers": "32"}, "field 'num_hidden_layers': expected a whole number of at "
                                  "least 1 (the number of layers), got \"32\""),
    ({"vocab_size": None}, "field 'vocab_size': expected a whole number"),
    ({"num_key_value_heads": 5}, "field 'num_key_value_heads': expected a whole number "
                                 "dividing the 32 attention heads, got 5"),
    ({"num_experts_per_tok": 9}, "field 'num_experts_per_tok': expected the experts each "
                                 "token uses, 1 to 8, got 9"),
    ({"model_type": 3}, "field 'model_type': expected the architecture's name"),
    ({"text_config": {}}, "a multimodal config: give its text model's config"),
    ({"use_sliding_window": True}, "sliding-window attention is not modelled"),
])
def test_a_local_config_that_describes_no_decoder_names_the_file_and_field(tmp_path, change,
                                                                          said):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**MIXTRAL, **change}))
    with pytest.raises(UnknownModelError) as info:
        get_model(str(path))
    assert str(info.value).startswith(f"{path}: ") and said in str(info.value)


def test_a_local_config_that_is_missing_or_not_json_is_said(tmp_path):
    with pytest.raises(UnknownModelError, match="no such config file"):
        get_model(str(tmp_path / "nothing.json"))
    (tmp_path / "broken.json").write_text("{\"hidden_size\": 4")
    with pytest.raises(UnknownModelError, match=r"broken.json: not a JSON config.json"):
        get_model(str(tmp_path / "broken.json"))


def test_a_model_built_from_a_local_config_is_measured_on_a_cpu(tmp_path):
    path = tmp_path / "my-model.json"
    path.write_text(json.dumps(get_model("tiny").config))
    result = subprocess.run([sys.executable, "-m", "infergy", "measure", "-m", str(path), "-b",
                             "1", "-i", "8", "--output", "2", "--device", "cpu", "--repeats",
                             "1", "--warmup", "0", "--idle-s", "0", "--json"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["point"]["model"] == str(path)


def test_a_folder_without_config_json_is_said_as_such(tmp_path):
    with pytest.raises(UnknownModelError, match=r"a folder without config\.json"):
        get_model(str(tmp_path))
