"""Engines on a CPU: the tiny model through every engine that runs without a GPU; engine names,
decoding specifications and prompts."""

from __future__ import annotations

import os
import sys

import pytest

from infergy.engines import (
    ENGINES,
    Engine,
    EngineError,
    Generation,
    UnknownEngineError,
    engine_class,
    engine_names,
    parse_options,
)
from infergy.engines.decoding import Decoding, DecodingError
from infergy.models.build import make_prompts, special_token_ids
from simulated_engines import GreedyOnlyEngine

CPU_ENGINES = ("hf-eager", "hf-compiled", "hf-paged")
FIRST_TOKEN_ENGINES = ("hf-eager", "hf-compiled")
GPU_ENGINES = ("vllm", "vllm-eager")
DECODINGS = ("greedy", "sample", "sample:temperature=0.7,top_p=0.9")


# -- generate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("decoding", DECODINGS)
@pytest.mark.parametrize("output_tokens", [1, 5])
@pytest.mark.parametrize("name", CPU_ENGINES)
def test_generate_gives_exactly_the_output_tokens_asked_for_every_prompt(
    engines, tiny, name, output_tokens, decoding
):
    prompts = make_prompts(tiny, 3, 8, seed=1)
    gen = engines[name].generate(prompts, output_tokens, Decoding.parse(decoding))
    assert isinstance(gen, Generation)
    assert gen.output_tokens == [output_tokens] * 3


@pytest.mark.parametrize("decoding", ["greedy", "sample"])
@pytest.mark.parametrize("output_tokens", [1, 5])
@pytest.mark.parametrize("name", FIRST_TOKEN_ENGINES)
def test_first_token_engines_signal_the_first_token_once_and_time_every_step(
    engines, tiny, name, output_tokens, decoding
):
    calls = []
    gen = engines[name].generate(make_prompts(tiny, 3, 8), output_tokens,
                                 Decoding.parse(decoding), on_first_token=lambda: calls.append(1))
    assert calls == [1]
    assert len(gen.token_times_s) == output_tokens
    assert gen.first_token_s == gen.token_times_s[0]
    assert gen.token_times_s == sorted(gen.token_times_s)
    assert engine_class(name).first_token_hook


def test_hf_paged_measures_prefill_by_a_separate_run(engines, tiny):
    """It cannot signal the first token: the runner must know, and the hook is not called."""
    assert not engine_class("hf-paged").first_token_hook
    calls = []
    gen = engines["hf-paged"].generate(make_prompts(tiny, 2, 8), 3, Decoding(),
                                       on_first_token=lambda: calls.append(1))
    assert gen.output_tokens == [3, 3]
    assert calls == []


def test_hf_paged_times_every_step_of_the_batch(engines, tiny):
    gen = engines["hf-paged"].generate(make_prompts(tiny, 2, 8), 4, Decoding())
    assert len(gen.token_times_s) == 4
    assert gen.first_token_s == gen.token_times_s[0] > 0
    assert gen.token_times_s == sorted(gen.token_times_s)


def test_hf_paged_keeps_one_manager_per_shape_and_replaces_it_for_a_new_one(engines, tiny):
    engine = engines["hf-paged"]
    engine.prepare(2, 8, 4, Decoding())
    manager = engine._manager
    assert manager.is_running()
    engine.generate(make_prompts(tiny, 2, 8), 4, Decoding())
    engine.generate(make_prompts(tiny, 2, 8), 1, Decoding())  # the prefill run: same shape
    assert engine._manager is manager
    engine.generate(make_prompts(tiny, 2, 8), 6, Decoding())  # longer than its cache holds
    assert engine._manager is not manager and not manager.is_running()
    manager = engine._manager
    engine.generate(make_prompts(tiny, 3, 8), 2, Decoding())
    assert engine._manager is not manager and not manager.is_running()


def test_hf_paged_refuses_an_unknown_option_naming_it(tiny):
    engine = engine_class("hf-paged")(tiny, device="cpu", dtype="float32",
                                      options={"no_such_setting": 1})
    engine.load()
    try:
        with pytest.raises(EngineError, match="no_such_setting"):
            engine.prepare(2, 8, 2, Decoding())
    finally:
        engine.close()


def test_engines_that_keep_a_cache_across_runs_do_not_share_prefixes(tiny, monkeypatch):
    """A point runs the same prompts many times: a prefix cache would skip every prefill
    after the first (it did, for vLLM, before this setting)."""
    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    engine = engine_class("vllm")(tiny, device="cuda")
    engine.load()
    try:
        assert fake_vllm.LLM.instances[-1].kwargs["enable_prefix_caching"] is False
        assert engine.generate([[1] * 8] * 2, 3, Decoding()).output_tokens == [3, 3]
    finally:
        engine.close()
    paged = engine_class("hf-paged")(tiny, device="cpu")
    assert paged._cb_config(2, 8, 4)[1]["allow_block_sharing"] is False
    # Both stay the user's choice.
    engine = engine_class("vllm")(tiny, device="cuda", options={"enable_prefix_caching": True})
    engine.load()
    assert fake_vllm.LLM.instances[-1].kwargs["enable_prefix_caching"] is True
    engine.close()


def test_hf_compiled_uses_infergy_grouped_query_attention(engines):
    info = engines["hf-compiled"].info()
    assert info["attention"] == "sdpa_gqa" and info["compile_dynamic"] is False
    assert engines["hf-eager"].info()["attention"] == "sdpa"


def test_hf_compiled_drops_earlier_shapes_graphs_before_compiling_a_new_one(tiny,
                                                                           monkeypatch):
    """A sweep compiles one graph a shape: kept, they would fill the card and, past dynamo's
    recompile limit, the engine would run eager while labelled compiled."""
    import torch

    engine = engine_class("hf-compiled")(tiny, device="cpu", dtype="float32")
    engine.load()
    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    try:
        engine.prepare(1, 8, 2, Decoding())
        assert resets == []  # nothing is compiled on a CPU
        engine.compiled = True  # as on a GPU (transformers still runs eager on a CPU)
        engine.prepare(1, 8, 2, Decoding())
        engine.max_batch(8, 2)  # the next shape's estimate sees the card without them
        engine.prepare(2, 8, 2, Decoding())
        assert resets == [1, 1, 1]
    finally:
        engine.close()


def test_an_unknown_attention_is_a_clear_error(tiny):
    engine = engine_class("hf-eager")(tiny, device="cpu", dtype="float32",
                                      options={"attention": "no-such-attention"})
    with pytest.raises(EngineError, match="no-such-attention"):
        engine.load()


def test_parse_options_reads_json_values_and_names_a_bad_item():
    assert parse_options(["a=true", "b=8", "c=0.5", "d=paged"]) == {
        "a": True, "b": 8, "c": 0.5, "d": "paged"}
    with pytest.raises(ValueError, match="'oops'"):
        parse_options(["oops"])


def test_hf_compiled_says_it_is_not_compiled_on_a_cpu(engines):
    info = engines["hf-compiled"].info()
    assert info["engine"] == "hf-compiled"
    assert info["compiled"] is False


@pytest.mark.parametrize("name", CPU_ENGINES)
def test_an_unsupported_decoding_is_refused_before_generating(tiny, name):
    engine = engine_class(name)(tiny, device="cpu", dtype="float32")
    engine.decodings = ("greedy",)  # an instance that supports less than its class
    with pytest.raises(EngineError, match="does not support sample decoding"):
        engine.generate(make_prompts(tiny, 1, 4), 2, Decoding("sample"))  # not loaded either


def test_check_decoding_names_what_the_engine_supports(tiny):
    engine = GreedyOnlyEngine(tiny, device="cpu")
    engine.check_decoding(Decoding("greedy"))
    with pytest.raises(EngineError, match=r"does not support sample decoding.*supports greedy"):
        engine.check_decoding(Decoding.parse("sample:temperature=0.5"))


# -- engine names --------------------------------------------------------------------------------


def test_every_engine_name_resolves_to_its_engine_class():
    assert engine_names() == list(ENGINES)
    for name in ("hf-eager", "hf-compiled", "hf-paged"):
        cls = engine_class(name)
        assert issubclass(cls, Engine)
        assert cls.name == name


def test_vllm_engines_resolve_without_vllm_installed():
    """vLLM is imported only when an engine is loaded: naming it costs nothing."""
    for name in GPU_ENGINES:
        cls = engine_class(name)
        assert cls.name == name
        assert cls.needs_gpu


def test_unknown_engine_lists_the_valid_names():
    with pytest.raises(UnknownEngineError) as info:
        engine_class("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in ENGINES:
        assert name in message


@pytest.mark.parametrize("name", GPU_ENGINES)
def test_vllm_engines_on_a_cpu_say_they_need_a_gpu(tiny, name):
    with pytest.raises(EngineError, match="needs a CUDA GPU"):
        engine_class(name)(tiny, device="cpu", dtype="float32")


# -- decoding --------------------------------------------------------------------------------


def test_decoding_parses_its_four_forms():
    assert Decoding.parse("greedy") == Decoding()
    assert not Decoding.parse("greedy").sampling
    assert Decoding.parse("sample") == Decoding("sample")
    d = Decoding.parse("sample:temperature=0.7,top_p=0.9")
    assert (d.strategy, d.temperature, d.top_p, d.sampling) == ("sample", 0.7, 0.9, True)
    assert Decoding.parse(d.label()) == d
    beam = Decoding.parse("beam:4")
    assert (beam.strategy, beam.beams, beam.sampling, beam.label()) == ("beam", 4, False, "beam:4")
    assert Decoding.parse(beam.label()) == beam


@pytest.mark.parametrize("name", ["hf-eager", "hf-compiled"])
def test_beam_search_gives_exact_lengths_without_a_first_token_signal(engines, tiny, name):
    calls = []
    gen = engines[name].generate(make_prompts(tiny, 2, 8), 5, Decoding.parse("beam:3"),
                                 on_first_token=lambda: calls.append(1))
    assert gen.output_tokens == [5, 5] and calls == []  # transformers streams no beams
    assert not engines[name].first_token_hook_for(Decoding.parse("beam:3"))
    assert engines[name].first_token_hook_for(Decoding())


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("beam", "beam search is written beam:N"),
        ("beam:x", "beam search is written beam:N"),
        ("beam:1", "beam search needs at least 2 beams"),
        ("speculative", "speculative decoding needs a draft model"),
        ("contrastive", "unknown decoding strategy"),
        ("sample:temperature=-1", "temperature must be a finite number > 0"),
        ("sample:temperature=0", "temperature must be a finite number > 0"),
        ("sample:temperature=inf", "temperature must be a finite number > 0, got inf"),
        ("sample:top_p=0", r"top_p must be in \(0, 1\]"),
        ("sample:top_p=1.5", r"top_p must be in \(0, 1\]"),
        ("sample:temperature=hot", "temperature must be a number"),
        ("sample:top_k=5", "expected temperature=X or top_p=X"),
        ("greedy:temperature=0.5", "takes no parameters"),
    ],
)
def test_bad_decodings_raise_decoding_error_saying_why(text, match):
    with pytest.raises(DecodingError, match=match):
        Decoding.parse(text)


# -- prompts ---------------------------------------------------------------------------------


def test_prompts_have_exactly_the_input_tokens_and_no_special_token(tiny):
    prompts = make_prompts(tiny, 4, 300, seed=3)
    special = special_token_ids(tiny.config)
    assert special  # the tiny model has bos and eos ids to avoid
    assert len(prompts) == 4
    for prompt in prompts:
        assert len(prompt) == 300
        assert not special & set(prompt)
        assert all(0 <= t < tiny.config["vocab_size"] for t in prompt)
    assert make_prompts(tiny, 4, 300, seed=3) == prompts  # seeded
    assert make_prompts(tiny, 4, 300, seed=4) != prompts


def test_vllm_takes_the_studys_longest_bin_spawns_its_core_and_fails_clearly(monkeypatch):
    """vLLM on a GPU machine refused the 8,192 + O points (max_model_len was 8,192), and its
    forked engine core could not use CUDA after torch had counted the devices."""
    import fake_vllm
    from infergy.engines import EngineError
    from infergy.models import get_model

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "")  # restored (or removed) after
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD")
    engine = engine_class("vllm")(get_model("llama-3.1-8b"), device="cuda")
    engine.load()
    assert fake_vllm.LLM.instances[-1].kwargs["max_model_len"] >= 8192 + 512
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    engine.close()

    def refuse(**kwargs):
        raise RuntimeError("Engine core initialization failed. See root cause above.")

    monkeypatch.setattr(fake_vllm, "LLM", refuse)
    with pytest.raises(EngineError, match="vllm failed to start: Engine core initialization"):
        engine_class("vllm")(get_model("llama-3.1-8b"), device="cuda").load()


# -- vLLM's beam search, through the vllm test double ------------------------------------------


@pytest.fixture
def fake_vllm(monkeypatch):
    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", fake_vllm)
    fake_vllm.LLM.instances.clear()
    return fake_vllm


@pytest.mark.parametrize("name", GPU_ENGINES)
def test_vllm_beam_search_starts_with_a_tokenizer_and_an_emptied_prefix_cache(fake_vllm, tiny,
                                                                            name):
    """vLLM's beam search asks for a tokenizer (random weights: placeholder tokens of the
    model's vocabulary) and leans on the prefix cache, emptied before every run so that each
    run prefills its prompts."""
    from transformers import AutoTokenizer

    beam = Decoding.parse("beam:4")
    engine = engine_class(name)(tiny, device="cuda")
    engine.expect(beam)
    engine.load()
    (llm,) = fake_vllm.LLM.instances
    assert llm.kwargs["skip_tokenizer_init"] is False
    assert llm.kwargs["enable_prefix_caching"] is True
    assert len(AutoTokenizer.from_pretrained(llm.kwargs["model"])) == tiny.config["vocab_size"]
    prompts = make_prompts(tiny, 3, 8, seed=1)
    for _ in range(2):
        assert engine.generate(prompts, 5, beam).output_tokens == [5, 5, 5]
    assert llm.prefix_cache_resets == 2
    assert engine.info()["enable_prefix_caching"] is True
    # Greedy needs no tokenizer and no cache: vLLM starts again, once, and back for beams.
    with pytest.raises(EngineError, match="prepare it for this decoding first"):
        engine.generate(prompts, 5, Decoding())
    engine.prepare(3, 8, 5, Decoding())
    assert llm.shut_down and len(fake_vllm.LLM.instances) == 2
    assert fake_vllm.LLM.instances[-1].kwargs["enable_prefix_caching"] is False
    engine.prepare(3, 8, 5, Decoding.parse("sample"))
    engine.prepare(3, 8, 5, Decoding.parse("beam:2"))
    assert len(fake_vllm.LLM.instances) == 3
    assert engine.generate(prompts, 1, Decoding.parse("beam:2")).output_tokens == [1, 1, 1]
    engine.close()


def test_vllm_beam_search_keeps_the_users_prefix_cache_choice(fake_vllm, tiny):
    engine = engine_class("vllm")(tiny, device="cuda",
                                  options={"enable_prefix_caching": False})
    engine.expect(Decoding.parse("beam:2"))
    engine.load()
    (llm,) = fake_vllm.LLM.instances
    assert llm.kwargs["enable_prefix_caching"] is False
    engine.generate([[1] * 8], 3, Decoding.parse("beam:2"))
    assert llm.prefix_cache_resets == 0  # nothing cached to empty
    engine.close()


def test_a_sweep_plans_one_vllm_start_for_every_beam_width():
    from infergy.plan.spec import engine_starts, parse_spec

    spec = parse_spec({"models": ["llama-3.1-8b"], "engines": ["vllm", "hf-eager"],
                       "decodings": ["greedy", "beam:2", "beam:4", "sample"],
                       "input_tokens": [8], "output_tokens": [4], "batch_sizes": [1]})
    assert engine_starts(spec.tasks()) == 3  # vLLM: plain and beam; hf-eager: one


def test_vllm_beam_search_over_real_weights_needs_their_tokenizer(fake_vllm, tiny, tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps(tiny.config))
    engine = engine_class("vllm")(tiny, device="cuda", weights=tmp_path)
    with pytest.raises(EngineError, match=f"needs the checkpoint's tokenizer, and {tmp_path} "
                                          f"holds none"):
        engine.expect(Decoding.parse("beam:2"))
    assert not fake_vllm.LLM.instances  # before any work
    engine.expect(Decoding())  # the rest needs none
