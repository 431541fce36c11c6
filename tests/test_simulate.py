"""The serving simulator against hand-computed cases, and the step-cost fit recovering known
coefficients from synthetic points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infergy.cli import app
from infergy.estimate.continuous import Continuous
from infergy.estimate.fit import Measured, Window, fit_rows, fit_step_cost, point_features
from infergy.estimate.replays import predict_replay, replay_engine
from infergy.estimate.simulate import SimulationError, Static, simulate
from infergy.estimate.steps import FEATURES, StepCost
from infergy.store import Store
from infergy.workloads import get_trace

# s per step, per prompt token, per attention pair, per decoding sequence, per context token,
# per engine call, per read of all a mixture of experts' expert weights
TIME = [0.01, 1e-4, 1e-7, 1e-3, 1e-6, 0.005, 0.02]
ENERGY = [1.0, 0.02, 1e-5, 0.1, 1e-4, 0.5, 2.0]
IDLE_W, BUSY_W = 70.0, 200.0


def cost(batching: dict | None = None, **kw) -> StepCost:
    """A step-cost model of known coefficients (a test double: no card behind it)."""
    batching = batching or {"kind": "continuous", "kv_blocks": 10_000, "block_size": 16,
                            "max_num_seqs": 256, "max_num_batched_tokens": 4096}
    return StepCost("tiny", kw.get("engine", "vllm"), "test card", TIME, ENERGY, IDLE_W,
                    batching, busy_w=BUSY_W)


def t_of(f) -> float:
    return float(np.dot(TIME, f))


def test_one_request_offline_by_hand():
    """I = 10, O = 3: one call, a prefill step (10 tokens, 50 pairs) giving the first token,
    then two decode steps reading 11 and 12 tokens."""
    s = simulate(cost(), np.array([10]), np.array([3]))
    call = TIME[5]
    prefill = TIME[0] + 10 * TIME[1] + 50 * TIME[2]
    decode = 2 * TIME[0] + 2 * TIME[3] + 23 * TIME[4]
    assert s.time_s == pytest.approx(call + prefill + decode)
    assert s.ttft_s[0] == pytest.approx(call + prefill)
    assert s.steps == 3
    features = [3, 10, 50, 2, 23, 1, 0]
    assert s.energy_j == pytest.approx(np.dot(ENERGY, features) + BUSY_W * s.time_s
                                       + IDLE_W * s.time_s)
    assert s.idle_s == 0 and s.j_per_output_token == pytest.approx(s.energy_j / 3)


def test_two_requests_share_their_steps():
    """Two prompts of 4 tokens in one prefill step (8 tokens, 2 x 8 pairs), then one decode
    step of both (reading 5 + 5)."""
    s = simulate(cost(), np.array([4, 4]), np.array([2, 2]))
    assert s.steps == 2
    assert s.time_s == pytest.approx(TIME[5] + 2 * TIME[0] + 8 * TIME[1] + 16 * TIME[2]
                                     + 2 * TIME[3] + 10 * TIME[4])
    assert s.e2e_s[0] == s.e2e_s[1] == pytest.approx(s.time_s)


def test_a_token_budget_chunks_a_long_prompt():
    """A prompt of 10,000 tokens with a budget of 4,096: three steps of prefill (4,096, 4,096,
    1,808); its attention pairs sum to I^2 / 2 whatever the chunks."""
    s = simulate(cost(), np.array([10_000]), np.array([1]))
    assert s.steps == 3
    f = point_features(cost().batching, 1, 10_000, 1)
    assert f[1] == 10_000 and f[2] == pytest.approx(10_000**2 / 2)


@pytest.mark.parametrize("prompt", [200, 201, 202])
def test_a_prompt_whose_last_chunk_is_one_token_still_has_its_first_token(prompt):
    """A budget of 100 tokens: 201 leaves one prompt token for the third step, which computes
    it and samples the first token (it was once taken for a decoding step: no first token,
    the token charged as a decode)."""
    policy = {"kind": "continuous", "kv_blocks": 10_000, "block_size": 16,
              "max_num_seqs": 256, "max_num_batched_tokens": 100}
    s = simulate(cost(policy), np.array([prompt]), np.array([5]), np.array([0.0]))
    chunks = -(-prompt // 100)
    assert s.steps == chunks + 4
    assert s.ttft_s[0] == pytest.approx(chunks * TIME[0] + prompt * TIME[1]
                                        + prompt**2 / 2 * TIME[2])
    assert s.latency()["ttft_s"] is not None


def test_a_full_kv_cache_preempts_the_last_request_and_both_finish():
    """Blocks of one token, 12 of them: two requests of 4 + 4 are admitted (8 blocks), their
    decodes outgrow the cache, the later one is preempted and computed again after."""
    policy = Continuous(kv_blocks=12, max_num_batched_tokens=4096, max_num_seqs=8,
                        block_size=1)
    s = simulate(cost(), np.array([4, 4]), np.array([6, 6]), policy=policy)
    assert s.preemptions >= 1
    assert s.requests == 2 and not np.isnan(s.e2e_s).any()
    assert s.e2e_s[1] > s.e2e_s[0]
    # Recomputing costs prompt tokens beyond the two prompts
    alone = simulate(cost(), np.array([4, 4]), np.array([6, 6]))
    assert s.energy_j > alone.energy_j


def test_a_request_longer_than_the_whole_cache_is_left_out_and_said():
    policy = Continuous(kv_blocks=4, max_num_batched_tokens=4096, max_num_seqs=8, block_size=16)
    s = simulate(cost(), np.array([100, 8]), np.array([8, 8]), policy=policy)
    assert s.refused == 1 and s.requests == 1
    assert "left out" in s.notes[0]


def test_idle_gaps_between_arrivals_cost_idle_power():
    """Two requests 100 s apart: the card idles between them at its idle power."""
    one = simulate(cost(), np.array([10]), np.array([3]))
    s = simulate(cost(), np.array([10, 10]), np.array([3, 3]), np.array([0.0, 100.0]))
    assert s.time_s == pytest.approx(100 + one.time_s - TIME[5], rel=1e-9)  # no call online
    assert s.idle_s == pytest.approx(s.time_s - s.busy_s)
    assert s.idle_energy_j == pytest.approx(IDLE_W * s.idle_s)
    assert s.inflight_s[0] == pytest.approx(s.idle_s)
    assert s.idle_share > 0.99


def test_the_gaps_are_charged_at_the_server_s_waiting_power_where_it_was_measured():
    """A vLLM server up with its model loaded draws more than the bare card (118 W against
    72 W on an H100): where that was measured, the time with no request in flight is charged
    at it; where not, at the bare idle, and the run says so."""
    args = np.array([10, 10]), np.array([3, 3]), np.array([0.0, 100.0])
    bare = simulate(cost(), *args)
    loaded = cost()
    loaded.serving_idle_w, loaded.serving_idle_from = 120.0, "3 online replays"
    waiting = simulate(loaded, *args)
    assert waiting.idle_energy_j == pytest.approx(120.0 * waiting.idle_s)
    assert waiting.busy_energy_j == pytest.approx(bare.busy_energy_j)  # steps: as fitted
    assert not waiting.notes
    assert any("bare idle power (70 W)" in n for n in bare.notes)
    assert "120 W, the card waiting with the server up" in loaded.waiting_words()


def test_the_waiting_power_comes_from_replays_to_a_server_infergy_serve_started():
    """Only online replays whose idle was measured with the server up count (`infergy
    serve`'s, 2026-12-05: three to vllm); a replay with --serve measured the bare card
    before its server started (72 W) and does not. vllm-eager shares vllm's server."""
    from infergy.profile.points import serving_idle_powers

    store = [REPLAYS / "2026-12-05-h100-replays" / "replays-h100.db"]
    h100 = "NVIDIA H100 80GB HBM3"
    for engine in ("vllm", "vllm-eager"):
        found = serving_idle_powers(store, "llama-3.1-8b", engine, h100)
        assert [w.engine for w in found] == ["vllm"] * 3
        assert all(115 < w.watts < 125 and w.model == "llama-3.1-8b" for w in found)
    assert serving_idle_powers(store, "llama-3.1-8b", "hf-eager", h100) == []
    assert serving_idle_powers(store, "llama-3.1-8b", "vllm", "NVIDIA H200") == []


def test_a_decode_stretch_in_closed_form_equals_its_steps_one_by_one():
    """B = 3, I = 5, O = 6: one prefill step, then 5 decode steps of 3 sequences whose
    contexts are 6, 7, ... 10 each."""
    f = point_features(cost().batching, 3, 5, 6)
    by_hand = np.zeros(len(FEATURES))
    by_hand += [1, 15, 3 * 5 * 2.5, 0, 0, 1, 0]
    for k in range(5):
        by_hand += [1, 0, 0, 3, 3 * (6 + k), 0, 0]
    assert f == pytest.approx(by_hand)
    # A mixture of 64 experts, 8 a token: the prefill's 15 tokens read 1 - (7/8)^15 of its
    # experts' weights, each decode step's 3 tokens 1 - (7/8)^3.
    moe = point_features({**cost().batching, "experts": [64, 8]}, 3, 5, 6)
    assert moe[:-1] == pytest.approx(by_hand[:-1])
    assert moe[-1] == pytest.approx(1 - (7 / 8) ** 15 + 5 * (1 - (7 / 8) ** 3))


def test_static_batches_pad_to_the_longest_prompt_and_output():
    """transformers' generate: 2 prompts of 3 and 7 tokens, outputs 2 and 5: one prefill step
    of 2 x 7 tokens, then 4 decode steps of 2 sequences reading 8 ... 11 each."""
    static = cost({"kind": "static", "batch": 8}, engine="hf-eager")
    s = simulate(static, np.array([3, 7]), np.array([2, 5]), batches=[np.array([0, 1])])
    features = np.array([5, 14, 2 * 7 * 3.5, 8, 2 * (8 + 9 + 10 + 11), 1, 0])
    assert s.time_s == pytest.approx(t_of(features))
    assert s.generated_tokens == 10 and s.output_tokens == 7
    online = simulate(static, np.array([3, 7, 5]), np.array([2, 5, 3]),
                      np.array([0.0, 0.0, 50.0]), policy=Static(2))
    assert online.idle_s > 0 and online.requests == 3
    assert online.generated_tokens == 5 + 5 + 3  # the first batch padded to 5, online too


def test_a_static_engine_online_counts_the_requests_waiting_for_the_next_batch_in_flight():
    """Request 0 runs alone (1 and 2 have not arrived at its start); they arrive during its
    prefill and wait through its decoding: 3 in flight then, then both run, padded to 10."""
    static = cost({"kind": "static", "batch": 8}, engine="hf-eager")
    s = simulate(static, np.array([8, 8, 8]), np.array([5, 10, 3]),
                 np.array([0.0, 1e-4, 2e-4]), policy=Static(2))
    assert s.generated_tokens == 5 + 10 + 10 and s.output_tokens == 18
    assert max(s.inflight_s) == 3 and min(k for k in s.inflight_s if k) == 1


def test_requests_need_a_token_in_and_out():
    with pytest.raises(SimulationError, match="at least one input and one output"):
        simulate(cost(), np.array([0]), np.array([3]))


@pytest.mark.parametrize("batching", [
    {"kind": "static", "batch": 64},
    {"kind": "continuous", "kv_blocks": 50_000, "block_size": 16, "max_num_seqs": 1024,
     "max_num_batched_tokens": 16384},
    {"kind": "continuous", "kv_blocks": 50_000, "block_size": 16, "max_num_seqs": 1024,
     "max_num_batched_tokens": 16384, "experts": [64, 8]}])  # a mixture of experts
def test_the_fit_recovers_known_coefficients_from_synthetic_points(batching):
    """Points of a card whose steps cost exactly the known coefficients (a synthetic card):
    the fit gives them back, and predicts every point to within rounding."""
    true = cost(batching)
    windows = []
    for b in (1, 4, 64):
        for i in (32, 512, 4096):
            for o in (8, 64, 512):
                f, p = point_features(batching, b, i, o), point_features(batching, b, i, 1)
                t, tp = true.time(f), true.time(p)
                windows.append(Window(b, i, o, "max" if b == 64 else str(b), t,
                                      true.active_energy(f, t) + IDLE_W * t,
                                      true.active_energy(f, t), tp, true.active_energy(p, tp),
                                      IDLE_W, f"p{b}-{i}-{o}", 1 if t > 1 else 50))
    data = Measured("tiny", "vllm", "test card", windows, batching, IDLE_W, {}, [])
    fitted = fit_step_cost(data)
    used = [k for k in range(len(FEATURES)) if np.any([point_features(batching, w.batch,
            w.input_tokens, w.output_tokens)[k] for w in windows])]
    assert np.array(fitted.time_s)[used] == pytest.approx(np.array(TIME)[used], rel=1e-6)
    assert fitted.fit["summary"]["all"]["energy_error"]["max"] < 1e-6
    assert fitted.fit["summary"]["all"]["time_error"]["max"] < 1e-6


def test_a_prefill_looped_past_a_second_counts_in_the_energy_fit_by_its_own_runs():
    """A short point's prefill is looped apart from its request (483 runs against 131 on the
    H100): its window is its own runs x its time, not the request's runs x it."""
    def window(prefill_runs):
        return Window(1, 32, 8, "1", 0.01, 1.0, 0.5, 0.005, 0.2, IDLE_W, "p", 150,
                      prefill_runs)
    data = Measured("tiny", "vllm", "test card", [], cost().batching, IDLE_W, {}, [])
    counted = [len(fit_rows(data, [window(runs)] * 8)[3]) for runs in (150, 250)]
    assert counted == [8, 16]  # 0.75 s of prefill left out; 1.25 s counted


REPLAYS = Path(__file__).parents[1] / "docs" / "measurements"


@pytest.mark.parametrize("store", ["2026-11-27-h100-b1-and-vllm-replay/replay-h100.db",
                                   "2026-11-26-h100-x2-replay/replay-h100.db",
                                   "2026-12-05-h100-replays/replays-h100.db"])
def test_vllm_s_measured_h100_replays_are_predicted_within_10_percent(store):
    """The shipped H100 profile's vLLM model on what each measured vLLM run ran (offline
    batches rebuilt from the trace, online requests at their send times): the issue's 10%."""
    trace = get_trace("azure-code-2023")
    with Store(REPLAYS / store, create=False, read_only=True) as db:
        runs = [json.loads(r["result"]) for r in db.replays()]
    checked = 0
    for run in runs:
        if replay_engine(run) != "vllm":
            continue
        predicted, why = predict_replay(run, "llama-3.1-8b", trace=trace)
        assert why is None
        assert predicted.energy_j == pytest.approx(run["energy_j"], rel=0.10)
        assert predicted.time_s == pytest.approx(run["time_s"], rel=0.05)
        checked += 1
    assert checked >= 2


def test_make_run_s_estimate_prints_the_simulated_headline_beside_the_study_s():
    """`make run`'s command on the shipped H100 profile: each engine's simulated kWh with its
    band, latency and idle share, the study's formula as its own column (the figures of
    docs/measurements.md, 2026-12-04; vllm's gaps at its server's waiting power since
    2026-12-05)."""
    result = CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m",
                                      "llama-3.1-8b", "-e", "hf-eager,vllm", "--json"])
    assert result.exit_code == 0, result.output
    hf, vllm = json.loads(result.output)["gpus"][0]["engines"]
    assert vllm["serving"] == "online at the trace's own times"
    assert vllm["simulated_kwh"] == pytest.approx(0.2274, rel=0.01)
    assert "the card waiting with the server up" in vllm["idle_charged"]  # 74% idle
    assert hf["idle_charged"] is None  # 3% idle: not worth a line
    assert vllm["kwh"] == pytest.approx(0.1317, rel=0.01)  # the study's formula
    assert 0 < vllm["band"] < 0.10 and 0.5 < vllm["idle_share"] < 0.9
    assert hf["simulated_kwh"] > vllm["simulated_kwh"]
    table = CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b",
                                     "--serving", "offline", "--detail"])
    said = " ".join(table.output.split())
    for column in ("±p90", "TTFT p90", "idle", "study", "whole", "interp"):
        assert column in table.output
    assert "served offline (every request at once), simulated step by step" in said
    bad = CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m", "llama-3.1-8b",
                                   "--serving", "offline", "--rate", "4"])
    assert bad.exit_code == 2 and "--rate: for --serving online" in bad.output


def test_calibrate_writes_the_design_its_model_s_context_holds(tmp_path):
    """tiny's context (2,048) holds inputs 32 and 256 with 512 tokens out: the design's spec
    beside the store says so; a model too short for two inputs is refused, naming it."""
    from infergy.cli.calibrate import _spec

    spec = _spec("tiny", "hf-eager", tmp_path / "cal.db")
    assert spec.name == "cal-calibration-tiny-hf-eager.yaml"
    text = spec.read_text()
    assert "- 32\n  - 256\n" in text and "8192" not in text and "- max" in text
    bad = CliRunner().invoke(app, ["calibrate", "-m", "no-such-model", "-e", "vllm", "--db",
                                   str(tmp_path / "x.db")])
    assert bad.exit_code == 2 and "no-such-model" in bad.output


def test_calibrate_checks_its_engine_and_folder_before_writing_its_spec(tmp_path):
    """A model's config.json names the spec by a file name, in a folder made for the store;
    an unknown engine, a list of engines or a folder that cannot be made is said before
    anything is written (no traceback, no spec left behind)."""
    from infergy.cli.calibrate import _spec

    config = tmp_path / "cfg" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                  "num_hidden_layers": 2, "num_attention_heads": 4,
                                  "num_key_value_heads": 2, "intermediate_size": 128,
                                  "vocab_size": 1000, "max_position_embeddings": 4096}))
    spec = _spec(str(config), "hf-eager", tmp_path / "new" / "cal.db")
    assert spec.parent == tmp_path / "new" and "/" not in spec.name[len("cal-"):]
    assert f"- {config}" in spec.read_text()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for engine, db, says in [("bogus", tmp_path / "x.db", "unknown engine 'bogus'"),
                             ("hf-eager,vllm", tmp_path / "x.db", "one engine at a time"),
                             ("hf-eager", blocker / "x.db", "cannot be made")]:
        bad = CliRunner().invoke(app, ["calibrate", "-m", "tiny", "-e", engine, "--db", str(db)])
        assert bad.exit_code == 2 and says in " ".join(bad.output.split()), bad.output
        assert bad.exception is None or isinstance(bad.exception, SystemExit)
    assert not list(tmp_path.glob("x-*.yaml"))


def test_an_online_replay_is_simulated_with_the_caps_its_server_ran():
    """A vLLM server started with --max-num-seqs 2 --max-num-batched-tokens 512 (as
    `replay --engine-option` starts it): its replay is simulated with those caps, not the
    engine's defaults."""
    from dataclasses import replace

    from infergy.estimate.replays import server_caps, simulate_replay
    from infergy.estimate.simulate import policy_of
    c = cost({"kind": "continuous", "kv_blocks": 10_000, "block_size": 16, "max_num_seqs": 256,
              "max_num_batched_tokens": 4096, "memory_share": 0.9, "memory_bytes": 8e10,
              "block_bytes": 2**21})
    records = [{"input_tokens": 1000, "output_asked": 50, "sent_s": 0.01 * k} for k in range(8)]
    command = ["python", "-m", "vllm.entrypoints.openai.api_server", "--max-num-seqs", "2",
               "--max-num-batched-tokens", "512"]
    assert server_caps(command) == {"max_num_seqs": 2, "max_num_batched_tokens": 512}
    replay = {"mode": "online", "records": records, "server": {"command": command}}
    capped = replace(policy_of(c, online=True), max_num_seqs=2, max_num_batched_tokens=512)
    inputs, outputs = np.full(8, 1000), np.full(8, 50)
    sent = np.array([r["sent_s"] for r in records])
    assert simulate_replay(c, replay).time_s == pytest.approx(
        simulate(c, inputs, outputs, sent, policy=capped).time_s)
    default = simulate_replay(c, {**replay, "server": {"command": command[:3]}})
    assert default.time_s == pytest.approx(
        simulate(c, inputs, outputs, sent, policy=policy_of(c, online=True)).time_s)
    assert default.time_s < simulate_replay(c, replay).time_s  # 2 at a time is slower


def test_an_engine_whose_idle_is_charged_unlike_on_two_cards_is_said_not_comparable():
    """The shipped H100 profile holds vLLM's waiting power, the H200's not yet: `make run`'s
    estimate says the two vllm rows differ by that."""
    result = CliRunner().invoke(app, ["estimate", "-t", "azure-code-2023", "-m",
                                      "llama-3.1-8b", "-e", "hf-eager,vllm"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert ("vllm: not comparable across cards yet: the time with no request in flight is "
            "charged at the waiting power measured on NVIDIA H100 80GB HBM3 but at the bare "
            "idle on NVIDIA H200") in said
    assert "hf-eager: not comparable" not in said  # 3-4% idle: not worth a line


def test_a_model_without_replays_is_charged_the_card_s_waiting_power_from_the_shipped_ones(
        tmp_path):
    """llama-3.2-3b was calibrated offline only (no server waited with it loaded); estimated
    from the shipped profiles, it is charged the H100's waiting power the shipped replays
    measured with other models loaded, said so; llama-3.2-1b, whose store holds a replay of
    its own, its own. From a store of the user's alone, it is not (nothing measured it
    there)."""
    import shutil

    from infergy.estimate.fit import measured
    from infergy.profile.load import shipped_profiles

    (store,) = shipped_profiles("llama-3.2-3b")
    h100 = "NVIDIA H100 80GB HBM3"
    data = measured([store], "llama-3.2-3b", "vllm", h100)
    assert 115 < data.serving_idle_w < 125
    assert data.serving_idle_from == ("4 online replays to vllm's server, llama-3.1-8b and "
                                      "llama-3.2-1b loaded")
    own = measured(shipped_profiles("llama-3.2-1b"), "llama-3.2-1b", "vllm", h100)
    assert own.serving_idle_from == "1 online replay to vllm's server, llama-3.2-1b loaded"
    mine = tmp_path / "mine.db"
    shutil.copy(store, mine)
    assert measured([mine], "llama-3.2-3b", "vllm", h100).serving_idle_w is None


def test_a_shipped_store_given_by_a_relative_path_is_read_once(monkeypatch):
    """`make run` gives the report the shipped stores by relative paths: the waiting power's
    replays were read twice ("6 online replays" where the command said 3)."""
    from infergy.estimate.fit import _waiting_pool
    from infergy.profile.load import shipped_profiles
    shipped = shipped_profiles()
    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)
    given = [shipped[0].relative_to(root)]
    pool = [p.resolve() for p in _waiting_pool(given)]
    assert len(pool) == len(set(pool)) == len(shipped)


def test_the_fit_takes_the_engine_s_default_options_only(tmp_path):
    """A point measured with other engine options (a tuned variant) is not the engine's: the
    step-cost model is fitted without it, as the profiles are read."""
    import shutil

    from infergy.estimate.fit import measured
    store = tmp_path / "s.db"
    shutil.copy(Path(__file__).parents[1] / "src/infergy/profile/shipped/llama-3.2-1b-h100.db",
                store)
    before = measured([store], "llama-3.2-1b", "vllm")
    with Store(store) as db:
        p = db.point(before.windows[0].point)
        run = db.runs()[0]["id"]
        db.add_point(run, p["device"], json.loads(p["result"]),
                     engine_options='{"attention_backend": "TRITON_ATTN"}',
                     batch_requested=p["batch_requested"])
    assert len(measured([store], "llama-3.2-1b", "vllm").windows) == len(before.windows)
