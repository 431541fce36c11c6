"""Speculative decoding on a CPU: greedy speculation gives exactly greedy's tokens whatever the
draft accepts, a controlled acceptance hits its rate, and bad drafts or parameters are errors
before any work; vLLM's own speculation through its test double (tests/fake_vllm.py)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from infergy.cli import app
from infergy.engines import EngineError, engine_class
from infergy.engines.decoding import Decoding, DecodingError
from infergy.engines.speculative import assisted_generate, check_draft, speculative_generate
from infergy.models import get_model
from infergy.models.build import build_model, make_prompts
from infergy.plan import SpecError, parse_spec
from infergy.plan.point import Point
from infergy.run.point import measure_point


@pytest.fixture(scope="module")
def target(tiny):
    return build_model(tiny, device="cpu", dtype="float32", seed=0)


@pytest.fixture(scope="module")
def drafts(target):
    """Drafts that agree with the target always (itself), sometimes (a slightly perturbed
    copy: sequences of a batch accept different numbers of tokens) and almost never
    (tiny-draft, other random weights)."""
    noisy = copy.deepcopy(target)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn_like(p) * 0.002)
    return {"itself": target, "perturbed": noisy,
            "tiny-draft": build_model(get_model("tiny-draft"), device="cpu", dtype="float32",
                                      seed=1)}


def greedy(model, ids, output_tokens):
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=output_tokens, min_new_tokens=output_tokens,
                         pad_token_id=0)
    return out[:, ids.shape[1]:]


@pytest.mark.parametrize("draft", ["itself", "perturbed", "tiny-draft"])
@pytest.mark.parametrize(("batch", "output_tokens", "lookahead"),
                         [(1, 20, 4), (4, 33, 3), (5, 17, 1)])
def test_greedy_speculation_gives_exactly_the_greedy_tokens(
        tiny, target, drafts, draft, batch, output_tokens, lookahead):
    ids = torch.tensor(make_prompts(tiny, batch, 8, seed=1))
    tokens, stats = speculative_generate(target, drafts[draft], ids, output_tokens, lookahead)
    assert torch.equal(tokens, greedy(target, ids, output_tokens))
    rates = stats.as_dict()
    if draft == "itself":
        assert stats.rejected == 0 and rates["acceptance"] == rates["accepted_share"] == 1
        assert stats.rounds == math.ceil((output_tokens - 1) / (lookahead + 1))
    if draft == "perturbed" and batch > 1:
        assert 0.2 < rates["acceptance"] < 0.95  # rows accepted differently: holes were used
    if draft == "tiny-draft":
        assert rates["acceptance"] < 0.2


@pytest.mark.parametrize("draft", ["itself", "perturbed", "tiny-draft"])
def test_transformers_assisted_generation_gives_the_greedy_tokens_too(tiny, target, drafts,
                                                                        draft):
    ids = torch.tensor(make_prompts(tiny, 1, 8, seed=1))
    tokens, stats = assisted_generate(target, drafts[draft], ids, 30, 4, pad_token_id=0)
    assert torch.equal(tokens, greedy(target, ids, 30))
    assert stats.proposed >= stats.accepted and stats.rounds >= 30 / 5
    if draft == "itself":
        assert stats.rejected == 0
    with pytest.raises(EngineError, match="assisted generation takes one sequence, not 2"):
        assisted_generate(target, drafts[draft], ids.repeat(2, 1), 30, 4)


@pytest.mark.parametrize("rate", [0.3, 0.8])
def test_a_controlled_acceptance_hits_its_rate_within_sampling_error(tiny, target, drafts, rate):
    ids = torch.tensor(make_prompts(tiny, 8, 8, seed=2))
    generator = torch.Generator().manual_seed(3)
    tokens, stats = speculative_generate(target, drafts["tiny-draft"], ids, 150, 4,
                                         acceptance=rate, generator=generator)
    assert tokens.shape == (8, 150)
    compared = stats.accepted + stats.rejected
    assert compared > 300
    assert abs(stats.as_dict()["acceptance"] - rate) < 4 * math.sqrt(rate * (1 - rate) / compared)
    # Acceptance 1 and 0: every proposal kept, or none (one target token a round).
    _, all_kept = speculative_generate(target, drafts["tiny-draft"], ids, 21, 4, acceptance=1.0,
                                       generator=generator)
    _, none_kept = speculative_generate(target, drafts["tiny-draft"], ids, 21, 4,
                                        acceptance=0.0, generator=generator)
    assert (all_kept.rounds, all_kept.rejected) == (4, 0)
    assert (none_kept.rounds, none_kept.accepted) == (20, 0)


def test_the_engine_and_the_point_runner_record_the_acceptance(tiny, make_meter, tmp_path):
    from simulated import SimulatedGpu

    engine = engine_class("hf-eager")(tiny, device="cpu", dtype="float32")
    engine.load()
    decoding = "speculative:draft=tiny-draft,lookahead=3,acceptance=0.6"
    calls = []
    gen = engine.generate(make_prompts(tiny, 2, 8), 12, Decoding.parse(decoding),
                          on_first_token=lambda: calls.append(1))
    assert gen.output_tokens == [12, 12] and calls == [1] and gen.first_token_s is not None
    assert gen.stats["proposed"] > 0 and gen.stats["path"] == "loop"
    # One sequence, the draft's own acceptance: transformers' assisted generation on request.
    engine.options["speculative_path"] = "assisted"
    one = engine.generate(make_prompts(tiny, 1, 8), 12,
                          Decoding.parse("speculative:draft=tiny-draft,lookahead=3"),
                          on_first_token=lambda: calls.append(2))
    assert one.stats["path"] == "assisted" and calls == [1, 2] and one.output_tokens == [12]
    for path, text, message in [
            ("assisted", decoding, "a controlled acceptance needs speculative_path=loop"),
            ("fast", "speculative:draft=tiny-draft", "must be loop or assisted")]:
        engine.options["speculative_path"] = path
        with pytest.raises(EngineError, match=message):
            engine.generate(make_prompts(tiny, 1, 8), 4, Decoding.parse(text))
    engine.options.clear()
    assert engine.generate(make_prompts(tiny, 1, 8), 4, Decoding.parse(
        "speculative:draft=tiny-draft")).stats["path"] == "loop"
    result = measure_point(engine, Point("tiny", "hf-eager", 2, 8, 12, decoding),
                           make_meter([SimulatedGpu(power_w=200.0, update_s=1e-4)]), repeats=2)
    assert result.status == "ok", result.error
    stats = result.decoding_stats
    assert stats["proposed"] == 2 * result.repeats[0].decoding_stats["proposed"]  # summed
    assert 0 <= stats["acceptance"] <= 1 and stats["tokens_per_round"] >= 1
    engine.close()
    # A real target with the random draft would measure an agreement of almost nothing.
    real = engine_class("hf-eager")(tiny, device="cpu", dtype="float32", weights=tmp_path)
    with pytest.raises(EngineError, match="set acceptance=X"):
        real.check_decoding(Decoding.parse("speculative:draft=tiny-draft"))
    real.check_decoding(Decoding.parse(decoding))


def test_decoding_text_round_trips_and_bad_parameters_are_errors():
    d = Decoding.parse("speculative:draft=llama-3.2-1b,lookahead=4,acceptance=0.7")
    assert (d.draft, d.lookahead, d.acceptance) == ("llama-3.2-1b", 4, 0.7)
    assert Decoding.parse(d.label()) == d
    assert Decoding.parse("speculative:draft=x").label() == "speculative:draft=x,lookahead=4"
    for bad, message in [("speculative", "needs a draft model"),
                         ("speculative:draft=x,lookahead=0", "lookahead must be"),
                         ("speculative:draft=x,acceptance=1.5", r"acceptance must be in \[0, 1\]"),
                         ("speculative:draft=x,acceptance=-0.1", "acceptance must be in"),
                         ("speculative:draft=x,lookahead=two", "lookahead must be a whole"),
                         ("speculative:draft=x,beams=2", "cannot read 'beams=2'")]:
        with pytest.raises(DecodingError, match=message):
            Decoding.parse(bad)
    with pytest.raises(DecodingError, match="apply to speculative decoding only"):
        Decoding(strategy="greedy", draft="x")


def test_a_draft_of_another_vocabulary_is_an_error_before_any_work():
    llama = get_model("llama-3.1-8b")
    assert check_draft(llama, "llama-3.2-1b").name == "llama-3.2-1b"
    # One tokenizer, embeddings padded differently (152,064 and 151,936 rows): a pair.
    assert check_draft(get_model("deepseek-r1-distill-qwen-32b"),
                       "deepseek-r1-distill-qwen-1.5b")
    with pytest.raises(EngineError, match="vocabulary of 151,936 tokens and target llama"):
        check_draft(llama, "deepseek-r1-distill-qwen-1.5b")
    with pytest.raises(EngineError, match="draft unknown model 'nope'"):
        check_draft(llama, "nope")
    with pytest.raises(SpecError, match=r"decodings\[0\].*must share its target's tokenizer"):
        parse_spec({"models": ["tiny"], "input_tokens": [8], "output_tokens": [4],
                    "decodings": ["speculative:draft=llama-3.2-1b"]})
    with pytest.raises(SpecError, match="hf-paged does not support speculative"):
        parse_spec({"models": ["tiny"], "engines": ["hf-paged"], "input_tokens": [8],
                    "output_tokens": [4], "decodings": ["speculative:draft=tiny-draft"]})


@pytest.mark.parametrize(("args", "message"), [
    (["--decoding", "speculative", "--draft", "llama-3.2-1b"], "must share its target's"),
    (["--decoding", "speculative", "--draft", "tiny-draft", "--acceptance", "2"],
     "acceptance must be in [0, 1]"),
    (["--decoding", "speculative", "--draft", "tiny-draft", "--lookahead", "0"],
     "lookahead must be"),
    (["--decoding", "greedy", "--draft", "tiny-draft"], "--draft: for --decoding speculative"),
    (["--engine", "hf-compiled", "--decoding", "speculative", "--draft", "tiny-draft"],
     "hf-compiled does not support speculative"),
])
def test_measure_refuses_bad_speculative_options_before_any_work(args, message):
    result = CliRunner().invoke(app, ["measure", "-m", "tiny", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_measure_runs_speculative_decoding_and_prints_the_acceptance():
    result = CliRunner().invoke(app, [
        "measure", "-m", "tiny", "--decoding", "speculative", "--draft", "tiny-draft",
        "--lookahead", "2", "--acceptance", "0.5", "-b", "2", "-i", "8", "--output", "16",
        "--idle-s", "0", "--dtype", "float32", "--device", "cpu", "--repeats", "1",
        "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["point"]["decoding"] == "speculative:draft=tiny-draft,lookahead=2,acceptance=0.5"
    assert data["decoding_stats"]["proposed"] > 0


def save_checkpoint(model_name: str, folder, seed: int, vocab: dict | None = None):
    """A local checkpoint of a catalog model (random weights), with a word-level tokenizer of
    `vocab` where given: what --weights and --draft-weights read."""
    build_model(get_model(model_name), device="cpu", dtype="float32",
                seed=seed).save_pretrained(folder)
    if vocab is not None:
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
        PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(folder)
    return folder


def test_draft_weights_are_loaded_and_must_share_the_target_s_tokenizer(tiny, tmp_path):
    words = {f"t{i}": i for i in range(512)}
    target = save_checkpoint("tiny", tmp_path / "target", 0, words)
    draft = save_checkpoint("tiny-draft", tmp_path / "draft", 7, words)
    engine = engine_class("hf-eager")(tiny, device="cpu", dtype="float32", weights=target,
                                      options={"draft_weights": str(draft)})
    engine.load()
    natural = Decoding.parse("speculative:draft=tiny-draft,lookahead=2")
    engine.check_decoding(natural)  # real target, real draft: the natural acceptance
    gen = engine.generate(make_prompts(tiny, 2, 8), 6, natural)
    assert gen.output_tokens == [6, 6] and gen.stats["proposed"] > 0
    saved = build_model(get_model("tiny-draft"), device="cpu", dtype="float32", seed=7)
    assert torch.equal(engine._draft[1].lm_head.weight, saved.lm_head.weight)
    engine.close()
    other = save_checkpoint("tiny-draft", tmp_path / "other", 7,
                            {f"w{i}": i for i in range(512)})
    for folder, message in [(other, "its tokenizer differs from the target's"),
                            (tmp_path / "none", "no config.json")]:
        bad = engine_class("hf-eager")(tiny, device="cpu", dtype="float32", weights=target,
                                       options={"draft_weights": str(folder)})
        with pytest.raises(EngineError, match=message):
            bad.check_decoding(natural)
    result = CliRunner().invoke(app, ["measure", "-m", "tiny", "--weights", str(target),
                                      "--decoding", "speculative", "--draft", "tiny-draft",
                                      "--draft-weights", str(other), "--idle-s", "0"])
    assert result.exit_code == 2 and "tokenizer differs" in " ".join(result.output.split())


# -- vLLM's own speculative decoding, through the vllm test double ---------------------------


@pytest.fixture
def fake_vllm(monkeypatch):
    import sys

    import fake_vllm

    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    fake_vllm.LLM.instances.clear()
    return fake_vllm


SET_08_TEXT = "speculative:draft=llama-3.2-1b,lookahead=4,acceptance=0.8"
SET_08 = Decoding.parse(SET_08_TEXT)


@pytest.mark.parametrize("name", ["vllm", "vllm-eager"])
def test_vllm_speculates_with_its_own_draft_model_at_a_set_acceptance(fake_vllm, name):
    """The draft is started with vLLM (its catalog config, dummy weights like the target's);
    `acceptance` becomes vLLM's synthetic rejection sampling, its rates unconditional."""
    engine = engine_class(name)(get_model("llama-3.1-8b"), device="cuda")
    engine.expect(SET_08)
    engine.load()
    (llm,) = fake_vllm.LLM.instances
    spec = llm.kwargs["speculative_config"]
    assert spec["method"] == "draft_model" and spec["num_speculative_tokens"] == 4
    assert spec["rejection_sample_method"] == "synthetic"
    assert spec["synthetic_acceptance_rates"] == pytest.approx([0.8, 0.64, 0.512, 0.4096])
    with open(f"{spec['model']}/config.json") as f:  # the draft's own config
        assert json.load(f) == get_model("llama-3.2-1b").config
    assert llm.kwargs["load_format"] == "dummy" and llm.kwargs["disable_log_stats"] is False
    # Recorded by the draft's name, not the temporary folder vLLM read it from.
    assert engine.info()["speculative_config"]["model"] == "llama-3.2-1b"
    engine.close()


def test_vllms_acceptance_is_read_from_its_counters_and_hits_the_set_rate(fake_vllm,
                                                                          make_meter):
    from simulated import SimulatedGpu

    engine = engine_class("vllm")(get_model("llama-3.1-8b"), device="cuda")
    engine.expect(SET_08)
    engine.load()
    point = Point("llama-3.1-8b", "vllm", 8, 16, 200, SET_08_TEXT)
    result = measure_point(engine, point, make_meter([SimulatedGpu(power_w=300.0,
                                                                   update_s=1e-4)]),
                           repeats=2, warmup=1, prompts=[[1] * 16] * 8)
    assert result.status == "ok", result.error
    stats = result.decoding_stats
    per_run = result.repeats[0].decoding_stats
    assert per_run["rounds"] is None  # vLLM does not say how many passes the batch took
    assert stats["rounds"] is None and stats["proposed"] > 0
    compared = stats["accepted"] + stats["rejected"]
    assert abs(stats["acceptance"] - 0.8) < 4 * math.sqrt(0.8 * 0.2 / compared) + 0.02
    assert stats["sequence_rounds"] == sum(r.decoding_stats["sequence_rounds"]
                                           for r in result.repeats)  # both repeats'
    engine.close()


def test_vllm_starts_again_for_another_speculative_decoding_and_only_then(fake_vllm,
                                                                          monkeypatch):
    engine = engine_class("vllm")(get_model("llama-3.1-8b"), device="cuda")
    engine.expect(Decoding())
    engine.load()
    plain = fake_vllm.LLM.instances[-1]
    assert "speculative_config" not in plain.kwargs
    assert plain.kwargs.get("disable_log_stats", True) is True  # vLLM's default, untouched
    engine.prepare(1, 16, 8, Decoding())
    assert len(fake_vllm.LLM.instances) == 1
    with pytest.raises(EngineError, match="prepare it for this decoding first"):
        engine.generate([[1] * 16], 8, SET_08)
    engine.prepare(1, 16, 8, SET_08)  # the plain engine stopped, a speculating one started
    assert plain.shut_down and len(fake_vllm.LLM.instances) == 2
    assert engine.generate([[1] * 16], 8, SET_08).stats["proposed"] > 0
    engine.prepare(4, 16, 8, SET_08)
    natural = Decoding.parse("speculative:draft=llama-3.2-1b,lookahead=4")
    engine.prepare(4, 16, 8, natural)
    assert len(fake_vllm.LLM.instances) == 3
    assert "rejection_sample_method" not in fake_vllm.LLM.instances[-1].kwargs[
        "speculative_config"]  # compared with the target's tokens, as in use
    # A start that fails leaves no engine: the next point's prepare starts one again.
    def refuse(**kwargs):
        raise RuntimeError("CUDA out of memory while loading the draft")

    with monkeypatch.context() as patch:
        patch.setattr(fake_vllm, "LLM", refuse)
        with pytest.raises(EngineError, match="failed to start: CUDA out of memory"):
            engine.prepare(4, 16, 8, SET_08)
    with pytest.raises(EngineError, match="not running for"):
        engine.generate([[1] * 16], 8, natural)
    engine.prepare(4, 16, 8, natural)
    assert engine.generate([[1] * 16], 8, natural).output_tokens == [8]
    engine.close()


def test_vllm_refuses_a_random_draft_for_a_real_target_and_checks_draft_weights(
        fake_vllm, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "config.json").write_text(json.dumps(get_model("llama-3.1-8b").config))
    (target / "tokenizer.json").write_text("{}")  # a checkpoint's (the double reads no more)
    real = engine_class("vllm")(get_model("llama-3.1-8b"), device="cuda", weights=target)
    with pytest.raises(EngineError, match="vLLM loads the draft as it loads the target"):
        real.expect(SET_08)
    draft = tmp_path / "draft"
    draft.mkdir()
    (draft / "config.json").write_text(json.dumps(get_model("llama-3.2-1b").config))
    engine = engine_class("vllm")(get_model("llama-3.1-8b"), device="cuda", weights=target,
                                  options={"draft_weights": str(draft)})
    engine.expect(SET_08)
    engine.load()
    llm = fake_vllm.LLM.instances[-1]
    assert llm.kwargs["speculative_config"]["model"] == str(draft)
    assert llm.kwargs["load_format"] == "auto" and "draft_weights" not in llm.kwargs
    engine.close()
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps(get_model("deepseek-r1-distill-qwen-1.5b").config))
    bad = engine_class("vllm")(get_model("llama-3.1-8b"), device="cuda", weights=target,
                               options={"draft_weights": str(qwen)})
    with pytest.raises(EngineError, match="vocabulary of 151,936 tokens"):
        bad.expect(SET_08)
    assert len(fake_vllm.LLM.instances) == 1  # neither refused engine started
    # One tokenizer padded differently: vLLM's draft_model takes real weights of equal
    # vocabularies only; infergy's loop takes these.
    qwen32 = tmp_path / "qwen32"
    qwen32.mkdir()
    (qwen32 / "config.json").write_text(
        json.dumps(get_model("deepseek-r1-distill-qwen-32b").config))
    real_pair = engine_class("vllm")(get_model("deepseek-r1-distill-qwen-32b"), device="cuda",
                                     weights=qwen32, options={"draft_weights": str(qwen)})
    with pytest.raises(EngineError, match=r"vocabulary to equal the target's \(151936 and "
                                          r"152064 tokens"):
        real_pair.expect(Decoding.parse("speculative:draft=deepseek-r1-distill-qwen-1.5b"))
    assert len(fake_vllm.LLM.instances) == 1


def test_vllm_pads_a_random_drafts_vocabulary_to_its_targets(fake_vllm):
    """The study's second pair: DeepSeek-R1-Distill-Qwen-32B (152,064 rows) with its 1.5B
    (151,936). vLLM's draft_model method wants equal sizes; over random weights the draft is
    built with the target's, and the record says so."""
    pair = engine_class("vllm")(get_model("deepseek-r1-distill-qwen-32b"), device="cuda")
    pair.expect(Decoding.parse("speculative:draft=deepseek-r1-distill-qwen-1.5b,lookahead=4"))
    pair.load()
    spec = fake_vllm.LLM.instances[-1].kwargs["speculative_config"]
    with open(f"{spec['model']}/config.json") as f:
        config = json.load(f)
    assert config == {**get_model("deepseek-r1-distill-qwen-1.5b").config, "vocab_size": 152064}
    assert pair.info()["speculative_config"]["model"] == "deepseek-r1-distill-qwen-1.5b"
    assert pair.info()["draft_vocab_padded"].startswith("151936 -> 152064")
    pair.close()
