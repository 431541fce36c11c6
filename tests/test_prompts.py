"""Prompts of exactly I tokens: random ids by default, real text when a tokenizer is given."""

from __future__ import annotations

import pytest

from infergy.models import get_model
from infergy.models.build import make_prompts, special_token_ids


def test_random_prompts_have_exact_length_no_special_tokens_and_are_seeded():
    spec = get_model("tiny")
    prompts = make_prompts(spec, batch=4, input_tokens=300, seed=1)
    assert [len(p) for p in prompts] == [300] * 4
    special = special_token_ids(spec.config)
    assert special  # the tiny config names bos and eos
    assert not special & {t for p in prompts for t in p}
    assert all(0 <= t < spec.config["vocab_size"] for p in prompts for t in p)
    assert make_prompts(spec, 4, 300, seed=1) == prompts
    assert make_prompts(spec, 4, 300, seed=2) != prompts


@pytest.fixture(scope="module")
def char_tokenizer(tmp_path_factory):
    """A real (fast) tokenizer built here: one token per lowercase letter."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]"] + [chr(c) for c in range(97, 123)])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_text_prompts_are_cut_to_exact_length(char_tokenizer):
    spec = get_model("tiny")
    prompts = make_prompts(spec, batch=3, input_tokens=50, tokenizer=char_tokenizer,
                           text="abc")  # shorter than I: repeated as needed
    assert [len(p) for p in prompts] == [50] * 3
    assert prompts[0][:3] == char_tokenizer("abc", add_special_tokens=False)["input_ids"]
    assert prompts[0] != prompts[1]  # each prompt from its own offset


def test_text_without_tokens_is_an_error(char_tokenizer):
    with pytest.raises(ValueError, match="no tokens"):
        make_prompts(get_model("tiny"), 1, 8, tokenizer=char_tokenizer, text="")
