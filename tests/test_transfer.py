"""A step-cost model predicted for an unmeasured model (infergy.estimate.transfer), on a
synthetic card: its step costs made from known coefficients over real architectures'
drivers, which the transfer must recover, and predict a held-out model with."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infergy.estimate.fit import Measured, Window, predict_point
from infergy.estimate.steps import StepCost, routing
from infergy.estimate.transfer import TransferError, drivers, fit_transfer, leave_one_out
from infergy.models import ModelSpec, get_model
from infergy.models.flops import kv_cache_bytes_per_token, weight_bytes
from infergy.models.flops import shape as arch
from infergy.models.local import read_config

MODELS = ["llama-3.2-1b", "llama-3.2-3b", "olmo-7b", "llama-3.1-8b"]
# The synthetic card: per feature, the cost of a unit of its driver in time (s) and in energy
# above idle (J); and the price of a step's launches (a host launching each op's kernel).
TIME = [1.5e-13, 2.5e-15, 1.0e-17, 3e-15, 1e-13, 2e-4]
ACTIVE = [2e-11, 5e-13, 2e-15, 6e-13, 2e-11, 0.05]
STEP_LAUNCH = (1.5e-6, 2.5e-4)  # a step's price an op transformers launches (hf-eager)
TOKEN_WIDTH = (4e-11, 2e-8)  # a token's price a unit of its unfused widths (hf-eager)
STATIC = {"kind": "static", "batch": 64}


def per_feature(per_unit, x, expert_price: float = 0.0, layer_price: float = 0.0,
                step_launch: float = 0.0, token_width: float = 0.0) -> list[float]:
    """A model's cost a unit of each feature on the synthetic card: b x its driver, its
    experts' weights (expert_reads) read at the cost a byte of the other weights, a token's
    expert FLOPs (x's last) at `expert_price` more a FLOP, a decoding sequence's layers
    (x[5]) at `layer_price` a layer, a step's launches (x[8]: for hf-eager, the ops of
    transformers' code) at `step_launch` a launch, and a token's unfused widths (x[9]: for
    hf-eager, hidden + query + 2 x key-value, x layers) at `token_width` a unit."""
    out = [b * xi for b, xi in zip(per_unit, x[:6], strict=True)] + [per_unit[0] * x[6]]
    for i in (1, 3):  # prefill_tokens, decode_seqs
        out[i] += expert_price * x[7] + token_width * x[9]
    out[3] += layer_price * x[5]
    out[0] += step_launch * x[8]
    return out


def truth(name: str, batching: dict = STATIC, expert_price=(0.0, 0.0),
          layer_price=(0.0, 0.0)) -> StepCost:
    """A model's step cost on the synthetic card: exactly b x its drivers, and the prices."""
    x = drivers(get_model(name), "hf-eager")
    return StepCost(name, "hf-eager", "Synthetic GPU",
                    per_feature(TIME, x, expert_price[0], layer_price[0], STEP_LAUNCH[0],
                                TOKEN_WIDTH[0]),
                    per_feature(ACTIVE, x, expert_price[1], layer_price[1], STEP_LAUNCH[1],
                                TOKEN_WIDTH[1]),
                    70.0, {**batching, **routing(get_model(name))}, busy_w=100.0)


def windows_of(cost: StepCost) -> list[Window]:
    """A model's points on the synthetic card, as if measured: what its own cost gives."""
    out = []
    for batch in (1, 8, 64):
        for i, o in ((128, 64), (512, 128), (2048, 32)):
            t, e = predict_point(cost, batch, i, o)
            pt, pe = predict_point(cost, batch, i, 1)
            out.append(Window(batch, i, o, str(batch), t, e, e - cost.idle_w * t, pt,
                              pe - cost.idle_w * pt, cost.idle_w, f"{cost.model}-{batch}-{i}",
                              runs=10))
    return out


def synthetic(name: str, batching: dict = STATIC, expert_price=(0.0, 0.0),
              layer_price=(0.0, 0.0)) -> tuple[ModelSpec, Measured]:
    """A model as if measured on the synthetic card (a test double: its windows computed
    from its true step cost, not measured)."""
    cost = truth(name, batching, expert_price, layer_price)
    return get_model(name), Measured(name, "hf-eager", "Synthetic GPU", windows_of(cost),
                                     cost.batching, cost.idle_w, {}, [])


def test_the_transfer_recovers_the_card_s_coefficients_and_predicts_a_held_out_model():
    known = [synthetic(m) for m in MODELS[:3]]
    transfer = fit_transfer(known)
    np.testing.assert_allclose(np.array(transfer.time), np.array(TIME), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(transfer.launch_price[0], STEP_LAUNCH[0], rtol=1e-6)
    np.testing.assert_allclose(transfer.width_price[0], TOKEN_WIDTH[0], rtol=1e-6)
    # Energy: a step's busy power x its time is itself a sum of the features' time costs, so
    # only the energy of a feature's unit, busy power included, is fixed by the windows.
    def per_unit(active, busy_w):
        return np.array(active) + busy_w * np.array(TIME)
    np.testing.assert_allclose(per_unit(transfer.active, transfer.busy_w),
                               per_unit(ACTIVE, 100.0), rtol=1e-6, atol=1e-12)
    spec, want = get_model(MODELS[3]), truth(MODELS[3])
    predicted = transfer.predict(spec, band={"energy p90": 0.05})
    np.testing.assert_allclose(predicted.time_s, want.time_s, rtol=1e-6)
    for shape in ((1, 128, 64), (64, 2048, 512)):
        assert predict_point(predicted, *shape) == pytest.approx(predict_point(want, *shape),
                                                                 rel=1e-6)
    assert (predicted.idle_w, predicted.batching) == (70.0, STATIC)
    assert predicted.fit["predicted"] and predicted.fit["from_models"] == MODELS[:3]
    assert predicted.fit["band"] == {"energy p90": 0.05}
    assert predicted.serving_idle_w is None  # no model measured a waiting server


def test_a_mixture_of_experts_is_predicted_from_dense_models_by_the_experts_it_reads():
    """On a card where an expert's weights cost what the other weights cost a byte, dense
    models alone predict a mixture of experts exactly: one token reads 8 of olmoe-1b-7b's 64
    experts a layer, 64 tokens nearly all, so its B = 1 decode costs far less than reading
    all it stores."""
    transfer = fit_transfer([synthetic(m) for m in MODELS[:3]])
    moe, want = get_model("olmoe-1b-7b"), truth("olmoe-1b-7b")
    predicted = transfer.predict(moe)
    assert predicted.experts == (64, 8) and predicted.batching["experts"] == [64, 8]
    np.testing.assert_allclose(predicted.time_s, want.time_s, rtol=1e-6)
    for shape in ((1, 512, 128), (8, 512, 128), (64, 512, 128)):
        assert predict_point(predicted, *shape) == pytest.approx(predict_point(want, *shape),
                                                                 rel=1e-6)
    every_expert = TIME[0] * drivers(moe, "hf-eager")[6]  # every expert read, every step
    every = [want.time_s[0] + every_expert, *want.time_s[1:-1]]
    as_dense = StepCost("olmoe as dense", "hf-eager", "Synthetic GPU", every,
                        want.active_j[:-1], 70.0, STATIC, busy_w=100.0)
    t1, _ = predict_point(want, 1, 512, 128)
    assert t1 < 0.8 * predict_point(as_dense, 1, 512, 128)[0]
    t64, _ = predict_point(want, 64, 512, 128)  # 64 tokens: nearly every expert read
    assert t64 == pytest.approx(predict_point(as_dense, 64, 512, 128)[0], rel=0.01)


def test_a_mixture_of_experts_measured_prices_the_expert_flops_of_another():
    """Where a card's experts' FLOPs cost more than dense FLOPs, dense models cannot see it
    (the price stays 0), and one measured mixture of experts fixes it: a second, of another
    shape (128 experts of 768, top-8), is then predicted exactly."""
    price = (2e-15, 4e-13)
    dense = [synthetic(m) for m in MODELS[:3]]
    assert fit_transfer(dense).expert_price == (0.0, 0.0)
    transfer = fit_transfer([*dense, synthetic("olmoe-1b-7b", expert_price=price)])
    np.testing.assert_allclose(transfer.expert_price[0], price[0], rtol=1e-6)
    want = truth("qwen3-30b-a3b", expert_price=price)
    predicted = transfer.predict(get_model("qwen3-30b-a3b"))
    np.testing.assert_allclose(predicted.time_s, want.time_s, rtol=1e-6)
    for shape in ((1, 512, 128), (64, 2048, 128)):
        assert predict_point(predicted, *shape) == pytest.approx(predict_point(want, *shape),
                                                                 rel=1e-6)
    # Without the price a point of 64 x 2048 tokens is short by its expert FLOPs' share.
    plain = fit_transfer(dense).predict(get_model("qwen3-30b-a3b"))
    assert predict_point(plain, 64, 2048, 128)[0] < 0.9 * predict_point(want, 64, 2048, 128)[0]


def test_two_models_price_a_decoding_sequence_s_layers_and_a_step_s():
    """Where a decoding sequence costs a price a layer beside its FLOPs, and a step a price a
    layer beside the weights it reads, two dense models of other depths a byte fix both and
    predict a third, of another family, exactly."""
    price = (4e-7, 2e-5)
    known = [synthetic(m, layer_price=price) for m in ("llama-3.2-1b", "llama-3.1-8b")]
    transfer = fit_transfer(known)
    np.testing.assert_allclose(transfer.layer_price[0], price[0], rtol=1e-6)
    np.testing.assert_allclose(transfer.launch_price[0], STEP_LAUNCH[0], rtol=1e-6)
    target = "deepseek-r1-distill-qwen-1.5b"
    want = truth(target, layer_price=price)
    predicted = transfer.predict(get_model(target))
    np.testing.assert_allclose(predicted.time_s, want.time_s, rtol=1e-6)
    assert predict_point(predicted, 64, 512, 128) == pytest.approx(
        predict_point(want, 64, 512, 128), rel=1e-6)
    assert transfer.expert_price == pytest.approx((0.0, 0.0), abs=1e-12)  # no experts here


def test_two_models_fit_the_line_and_one_predicts_nothing():
    """Two models' windows together determine the cost of each feature's driver and the
    layers' prices; one model shows no error, so predicts nothing."""
    two = [synthetic(m) for m in MODELS[:2]]
    transfer = fit_transfer(two)
    spec, want = get_model(MODELS[3]), truth(MODELS[3])
    predicted = transfer.predict(spec)
    t, e = predict_point(predicted, 8, 512, 128)
    assert (t, e) == pytest.approx(predict_point(want, 8, 512, 128), rel=1e-6)
    with pytest.raises(TransferError, match=r"at least 2 models measured with hf-eager on "
                                            r"Synthetic GPU \(there is 1: llama-3.2-1b\)"):
        fit_transfer([two[0], two[0]])  # one model, twice, is one model
    with pytest.raises(TransferError, match="one engine on one card"):
        other = synthetic(MODELS[1])
        other[1].engine = "vllm"
        fit_transfer([two[0], other])


def test_the_waiting_power_is_the_measured_models_median_said_with_them():
    known = [synthetic(m) for m in MODELS[:3]]
    for n, (w, said) in enumerate([(118.0, "2 replays, llama-3.1-8b loaded"),
                                   (122.0, "1 replay, llama-3.2-3b loaded"),
                                   (118.0, "2 replays, llama-3.1-8b loaded")]):
        known[n][1].serving_idle_w, known[n][1].serving_idle_from = w, said
    predicted = fit_transfer(known).predict(get_model(MODELS[3]))
    assert predicted.serving_idle_w == 118.0
    assert predicted.serving_idle_from == ("2 replays, llama-3.1-8b loaded; 1 replay, "
                                           "llama-3.2-3b loaded")  # each source once


def test_leave_one_out_predicts_each_model_from_the_others_with_its_error():
    known = [synthetic(m) for m in MODELS]
    check = leave_one_out(known)
    assert sorted(check) == sorted(MODELS)
    for summary in check.values():  # an exact card: every model predicted exactly
        assert summary["all"]["energy_error"]["p90"] < 1e-6
        assert summary["all"]["time_error"]["p90"] < 1e-6
    with pytest.raises(TransferError, match="needs at least 3 measured models"):
        leave_one_out(known[:2])


def test_a_continuous_engine_s_kv_cache_is_sized_for_the_predicted_model():
    """vLLM's cache: the card's memory as the measured models used it, less the new model's
    weights and what its profiling run's activations take (twice the gate and up
    projections' output on this synthetic card), in blocks of its own bytes a token."""
    policy = {"kind": "continuous", "block_size": 16, "max_num_seqs": 1024,
              "max_num_batched_tokens": 16384}

    def usable(name):
        return 60e9 - 2.0 * 16384 * 2 * arch(name).ffn * 2

    def blocks(name):
        return int((usable(name) - weight_bytes(name)) // (kv_cache_bytes_per_token(name) * 16))

    known = [synthetic(m, {**policy, "kv_blocks": blocks(m),
                           "block_bytes": kv_cache_bytes_per_token(m) * 16}) for m in MODELS[:3]]
    spec = get_model(MODELS[3])
    predicted = fit_transfer(known).predict(spec).batching
    assert predicted["kv_blocks"] == pytest.approx(blocks(MODELS[3]), rel=1e-3)
    assert predicted["kind"] == "continuous" and "memory_line" not in predicted
    assert "predicted" in predicted["kv_source"]
    # A cache the same whatever the MLP's width: no slope, the models' median.
    flat = [synthetic(m, {**policy, "kv_blocks": int((60e9 - weight_bytes(m))
                                                     // (kv_cache_bytes_per_token(m) * 16)),
                          "block_bytes": kv_cache_bytes_per_token(m) * 16})
            for m in MODELS[:3]]
    want = (60e9 - weight_bytes(spec)) // (kv_cache_bytes_per_token(spec) * 16)
    assert fit_transfer(flat).predict(spec).batching["kv_blocks"] == pytest.approx(want, rel=1e-3)
    with pytest.raises(TransferError, match="leave no room for a KV cache"):
        fit_transfer(known).predict(get_model("deepseek-r1-distill-qwen-32b"))


def write_card(path, names: list[str], card: str = "NVIDIA H200",
               engine: str = "hf-eager") -> None:
    """A store of the synthetic card (a test double: points computed, not measured): each
    model's calibration design on hf-eager, its times and energies its synthetic step costs'
    exactly, B = max as the sweep's memory model would find it in 100 GiB left free."""
    from infergy.estimate.filled import max_batch
    from infergy.estimate.fit import point_features
    from infergy.plan.presets import CALIBRATION_INPUTS, CALIBRATION_OUTPUTS
    from infergy.store import Store

    with Store(path) as store:
        run = store.start_run(device="GPU-s", meta={"gpus": [{"model": card}],
                                                     "idle_w": {"gpu0": 70.0}}, spec=None)
        for name in names:
            spec, cost = get_model(name), truth(name)
            free = 100 * 2**30 + weight_bytes(get_model("llama-3.1-8b")) - weight_bytes(spec)
            cost.limits = {"cap": 1024, "free_bytes": free}
            for i in CALIBRATION_INPUTS:
                for o in CALIBRATION_OUTPUTS:
                    for requested in (1, "max"):
                        b = 1 if requested == 1 else max_batch(cost, i, o)
                        t, e = predict_point(cost, b, i, o)
                        pt, pe = predict_point(cost, b, i, 1)
                        point = {"model": name, "engine": engine, "batch": b,
                                 "input_tokens": i, "output_tokens": o, "decoding": "greedy",
                                 "tp": 1, "dtype": "bfloat16"}
                        assert point_features(cost.batching, b, i, o)[0] == o
                        store.add_point(run, "GPU-s", {
                            "point": point, "status": "ok", "energy_j": e, "time_s": t,
                            "active_energy_j": e - 70.0 * t, "j_per_output_token": e / (b * o),
                            "runs_per_window": int(2 / min(t, pt)) + 1,
                            "repeats": [{"prefill": {"time_s": pt,
                                                     "active_energy_j": pe - 70.0 * pt}}]},
                            engine_options="{}", batch_requested=requested,
                            batch_search=None if requested == 1 else {
                                "cap": 1024, "memory_model": {"free_gib": free / 2**30}})
        store.end_run(run, "finished")


def said_on_a_card(tmp_path, command: str, engines: str) -> str:
    """What `infergy COMMAND` prints (one line) for llama-3.1-8b on the synthetic H200 that
    calibrated three other models on hf-eager."""
    from typer.testing import CliRunner

    from infergy.cli import app

    store = tmp_path / "card.db"
    write_card(store, MODELS[:3])
    shown = CliRunner().invoke(app, [command, "-t", "azure-code-2023", "-m", MODELS[3], "-e",
                                     engines, "--gpu", "h200", "--profile", str(store)],
                               env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    return " ".join(shown.output.split())


def test_dense_models_are_predicted_from_dense_ones_and_a_mixture_of_experts_from_all(tmp_path):
    """A calibrated mixture of experts is left out of a dense model's prediction (on the H100
    it made llama-3.2-1b's worse), and is what a new mixture of experts' band is of."""
    import json

    from infergy.estimate.unmeasured import MOE_FROM_DENSE, predict_unmeasured
    from infergy.models.local import read_config

    store = tmp_path / "card.db"
    write_card(store, [*MODELS[:3], "olmoe-1b-7b"])
    dense, *_, words, _ = predict_unmeasured([store], get_model("llama-3.1-8b"), "hf-eager",
                                             "h200")
    assert dense.fit["from_models"] == MODELS[:3] and "olmoe" not in words
    config = get_model("olmoe-1b-7b").config  # a mixture of experts of another shape
    (tmp_path / "moe.json").write_text(json.dumps({**config, "num_experts": 32,
                                                   "num_experts_per_tok": 4}))
    moe = read_config(str(tmp_path / "moe.json"))
    cost, worst, words, _ = predict_unmeasured([store], moe, "hf-eager", "h200")
    assert cost.fit["from_models"] == [*MODELS[:3], "olmoe-1b-7b"] and cost.experts == (32, 4)
    assert "olmoe-1b-7b predicted from the others erred by p90 0%" in words
    assert MOE_FROM_DENSE not in words and worst["all"]["energy_error"]["p90"] < 1e-6
    # The synthetic card prices expert FLOPs as dense ones: 1.0x, checked by no second MoE.
    assert words.endswith("its experts' FLOPs take 1.0x the time of a dense prompt's FLOP, "
                          "as olmoe-1b-7b showed, a price no second mixture of experts has checked")


def test_estimate_predicts_a_model_measured_on_no_engine_of_the_card_labelled(tmp_path):
    """llama-3.1-8b on a synthetic H200 that calibrated four other models: `infergy
    estimate --gpu h200` prints its estimate, labelled predicted with the leave-one-model-out
    band (near 0 here: the card is linear, and the windows of the other models fix b x),
    its B = max points the truth's. Three models, each held out against two, give the same
    near-0 band; two are refused."""
    import json

    from typer.testing import CliRunner

    from infergy.cli import app
    from infergy.estimate.filled import predicted_points

    store = tmp_path / "card.db"
    write_card(store, [*MODELS[:3], "olmo-1b"])
    args = ["estimate", "-t", "azure-code-2023", "-m", MODELS[3], "-e", "hf-eager",
            "--gpu", "h200", "--profile", str(store)]
    shown = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.output.split())
    assert ("llama-3.1-8b is measured on none of these engines on NVIDIA H200 (hf-eager): "
            "every figure above is predicted for a model not measured with hf-eager on this "
            "card, from llama-3.2-1b, llama-3.2-3b, "
            "olmo-1b, olmo-7b") in said
    # Without --gpu: the model is measured on no card, so each card the stores hold predicts.
    anywhere = [a for a in args if a not in ("--gpu", "h200")]
    assert json.loads(CliRunner().invoke(app, [*anywhere, "--json"]).output)["gpus"][0][
        "predicted_model"].startswith("predicted for a model not measured")
    card = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)["gpus"][0]
    (row,) = card["engines"]
    assert card["predicted_model"].startswith("predicted for a model not measured")
    assert 0 <= row["band"] < 0.02
    exact = truth(MODELS[3])
    exact.limits = {"cap": 1024, "free_bytes": 100 * 2**30}
    want = predicted_points(exact, [(b["input"], b["output"]) for b in row["bins"]])
    for b in row["bins"]:
        w = want[(b["input"], b["output"])]
        assert b["predicted"] and b["batch"] == w["batch"]
        assert b["batch_energy_j"] == pytest.approx(w["energy_j"], rel=0.02)
    three = tmp_path / "three.db"
    write_card(three, MODELS[:3])
    three_band = json.loads(CliRunner().invoke(app, [*args[:-1], str(three), "--json"]).output)
    assert 0 <= three_band["gpus"][0]["engines"][0]["band"] < 0.02
    # Two calibrated models show no error: refused, with what to calibrate.
    two = tmp_path / "two.db"
    write_card(two, MODELS[:2])
    refused = CliRunner().invoke(app, [*args[:-1], str(two)])
    assert refused.exit_code == 2
    assert "needs 3 dense models calibrated there on hf-eager" in " ".join(refused.output.split())


def test_an_engine_the_card_cannot_predict_is_a_row_and_the_next_is_the_baseline(tmp_path):
    """vllm first, but only hf-eager calibrated on the card: vllm's row says why it is not
    predicted, hf-eager is estimated and is what the savings are against; the stores it came
    from are listed."""
    said = said_on_a_card(tmp_path, "estimate", "vllm,hf-eager")
    assert ("vllm: not predicted on NVIDIA H200: predicting a model not measured on h200 needs "
            "3 dense models calibrated there on vllm") in said
    assert "saving: less energy than hf-eager." in said
    assert f"Profiles:{tmp_path / 'card.db'}" in said.replace(" ", "")  # the path may wrap


def test_a_mixture_of_experts_from_dense_models_and_a_new_family_are_said(tmp_path):
    from infergy.estimate.unmeasured import MOE_FROM_DENSE, predict_unmeasured

    store = tmp_path / "card.db"
    write_card(store, MODELS[:3])  # llama and olmo, all dense
    cost, *_, words, _ = predict_unmeasured([store], get_model("olmoe-1b-7b"), "hf-eager",
                                            "h200")
    assert cost.experts == (64, 8) and words.endswith(MOE_FROM_DENSE)
    *_, words, _ = predict_unmeasured([store], get_model("deepseek-r1-distill-qwen-1.5b"),
                                      "hf-eager", "h200")
    assert words.endswith("; its architecture (qwen2) is none of theirs (llama, olmo), and that "
                          "error was not checked on it")
    *_, words, _ = predict_unmeasured([store], get_model("llama-3.1-8b"), "hf-eager", "h200")
    assert "architecture" not in words and "extrapolation" not in words
    *_, words, _ = predict_unmeasured([store], get_model("deepseek-r1-distill-qwen-32b"),
                                      "hf-eager", "h200")
    assert words.endswith("; its 65.5 GB of weights (theirs 2.5-13.8) and its 64 layers (theirs "
                          "16-32) lie beyond what the check covered: an extrapolation, its error "
                          "not checked")


def test_advise_labels_an_engine_predicted_for_the_model_with_that_engine(tmp_path):
    """`infergy advise` for a model the synthetic H200 did not measure with hf-eager: its
    configurations are marked † and the verdict says the model is not measured with hf-eager
    there, not that the card measured it on no engine."""
    said = said_on_a_card(tmp_path, "advise", "hf-eager")
    assert "The model is not measured with hf-eager on NVIDIA H200: these figures are " \
           "predicted for a model not measured with hf-eager on this card" in said
    assert "† a card that did not measure the model with this engine" in said


def test_an_engine_a_measured_model_lacks_is_predicted_beside_the_one_it_has(tmp_path):
    """llama-3.1-8b measured on the synthetic H200 with hf-compiled only, three other models
    calibrated there on hf-eager: `infergy estimate -e hf-compiled,hf-eager` estimates the
    first from its points and predicts the second, said in its own line (advise searched it
    so, and estimate called it not measured yet)."""
    import json

    from typer.testing import CliRunner

    from infergy.cli import app

    others, own = tmp_path / "card.db", tmp_path / "own.db"
    write_card(others, MODELS[:3])
    write_card(own, [MODELS[3]], engine="hf-compiled")
    args = ["estimate", "-t", "azure-code-2023", "-m", MODELS[3], "-e", "hf-compiled,hf-eager",
            "--gpu", "h200", "--profile", str(own), "--profile", str(others)]
    shown = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.output.split())
    assert ("hf-eager: predicted for a model not measured with hf-eager on this card, from "
            "llama-3.2-1b, llama-3.2-3b, olmo-7b") in said
    assert "is measured on none of these engines" not in said and "not yet" not in said
    card = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)["gpus"][0]
    assert [r["engine"] for r in card["engines"]] == ["hf-compiled", "hf-eager"]
    assert card["predicted_model"] is None and list(card["predicted_engines"]) == ["hf-eager"]
    assert not card["unmeasured"]


def test_a_model_whose_ops_cannot_be_counted_is_predicted_as_a_llama_said(tmp_path):
    """hf-eager prices a step by the ops transformers' code launches; an architecture
    transformers cannot build is taken as a llama, and its prediction's note says why."""
    pytest.importorskip("transformers")
    config = dict(get_model("llama-3.2-1b").config, model_type="no-such-architecture")
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = read_config(str(tmp_path / "config.json"))
    note = fit_transfer([synthetic(m) for m in MODELS[:3]]).predict(spec).fit["note"]
    assert "its ops a step not counted" in note and "taken as a llama's" in note
    assert "not counted" not in fit_transfer([synthetic(m) for m in MODELS[:3]]).predict(
        get_model("llama-3.1-8b")).fit["note"]


def test_a_prior_settles_the_split_a_design_cannot_make_and_yields_to_the_points():
    """Two features that move together in every window: their points fit any split of one
    cost, and the prior's is taken; features the points tell apart are fitted by them."""
    from infergy.estimate.fit import nnls

    together = [np.array([x, x]) for x in (1.0, 2.0, 5.0)]
    y = [3.0 * r[0] for r in together]  # 2 + 1 a unit, or any split of 3
    np.testing.assert_allclose(nnls(together, y, [2.0, 1.0]), [2.0, 1.0], rtol=1e-6)
    apart = [np.array([a, b]) for a in (1.0, 3.0, 9.0) for b in (1.0, 4.0, 7.0)] * 20
    fitted = nnls(apart, [2.0 * r[0] + 1.0 * r[1] for r in apart], [4.0, 0.5])
    np.testing.assert_allclose(fitted, [2.0, 1.0], rtol=0.02)
    assert nnls(apart, [2.0 * r[0] + r[1] for r in apart]).tolist() == pytest.approx([2, 1])


def test_a_calibrated_model_s_prior_is_what_the_card_s_other_models_predict(tmp_path):
    """card_prior: the card's other calibrated models' prediction of the model (exact on the
    synthetic card), which the model's own fit records; none from fewer than two."""
    from infergy.estimate.fit import design, fit_step_cost, measured
    from infergy.estimate.transfer import card_prior

    store = tmp_path / "card.db"
    write_card(store, MODELS)
    target = get_model(MODELS[3])
    prior = card_prior([store], target, "hf-eager", "h200")
    assert prior.fit["from_models"] == MODELS[:3]
    np.testing.assert_allclose(prior.time_s, truth(MODELS[3]).time_s, rtol=1e-6)
    data = measured([store], MODELS[3], "hf-eager", "NVIDIA H200")
    own = fit_step_cost(data, design(data.windows)[0], prior)
    assert own.fit["prior"] == MODELS[:3]
    np.testing.assert_allclose(own.time_s, truth(MODELS[3]).time_s, rtol=1e-6)
    alone = tmp_path / "alone.db"
    write_card(alone, MODELS[2:])
    assert card_prior([alone], target, "hf-eager", "h200") is None
