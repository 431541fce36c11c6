"""Greedy speculative decoding: transformers' assisted generation (one sequence), and a loop
of infergy's own for a whole batch over transformers models' forward and cache.

Each round, the draft model proposes `lookahead` tokens per sequence, one forward pass each;
the target scores the sequence's newest token and the proposals in one forward pass; each
sequence keeps the proposals up to its first disagreement with the target's greedy choice,
then the target's own next token (Leviathan et al., 2023, greedy case). So greedy speculative
decoding gives exactly the tokens of greedy decoding, with fewer target passes.

Sequences of a batch accept different numbers of tokens. The caches (transformers'
DynamicCache) grow by the same number of slots for every sequence each round: the slots of
rejected proposals stay as holes that the attention mask hides, except the trailing ones that
every sequence rejected, which are cropped; each sequence carries its own positions. Nothing
is recomputed or copied, so each sequence advances by its own acceptance, as in a serving
engine, not by the batch's slowest, and a sequence that has all its tokens leaves the batch
(its cache rows are dropped). The holes cost memory and attention that a paged engine (vLLM)
frees: up to the gap between the batch's best acceptance and each sequence's own.

With `acceptance` set, whether each proposal is accepted is drawn (independently, with that
probability, until the first rejection) instead of compared with the target's choice. Both
models still run every forward pass on the tokens actually kept, so the compute is that of a
draft which agrees with its target at that rate; only the agreement is set. This is a
measurement device for random weights, whose drafts agree with their targets almost never:
the tokens are then not the target's greedy ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from infergy.engines.base import EngineError
from infergy.engines.decoding import speculative_rates
from infergy.models import ModelSpec, UnknownModelError, get_model

# Checkpoints of one tokenizer pad their embeddings differently (Qwen2-1.5B 151,936 rows,
# DeepSeek-R1-Distill-Qwen-32B 152,064): vocabularies this close are one tokenizer's.
VOCAB_PADDING = 1024


def check_draft(target: ModelSpec, name: str | None) -> ModelSpec:
    """The draft model of `target`, or EngineError before any work: unknown, or of another
    vocabulary (a draft proposes token ids that its target must read as the same tokens)."""
    try:
        draft = get_model(name or "")
    except UnknownModelError as err:
        raise EngineError(f"speculative decoding: draft {err}") from None
    _check_vocabulary(f"speculative decoding: draft {draft.name}", draft.hf_config().vocab_size,
                      f"target {target.name}", target.hf_config().vocab_size)
    return draft


def _check_vocabulary(draft: str, draft_vocab, target: str, target_vocab: int) -> None:
    if not isinstance(draft_vocab, int) or abs(draft_vocab - target_vocab) > VOCAB_PADDING:
        size = f"{draft_vocab:,}" if isinstance(draft_vocab, int) else str(draft_vocab)
        raise EngineError(
            f"{draft} has a vocabulary of {size} tokens and {target} "
            f"{target_vocab:,}: a draft must share its target's tokenizer (the study's pairs: "
            f"llama-3.1-8b with llama-3.2-1b, deepseek-r1-distill-qwen-32b with "
            f"deepseek-r1-distill-qwen-1.5b)")


def vocab_size(spec: ModelSpec, folder: Path | None = None):
    """A model's vocabulary: its checkpoint's (`folder`) where it has a config, else the
    catalog's."""
    config = Path(folder or "", "config.json")
    if folder is not None and config.is_file():
        return json.loads(config.read_text()).get("vocab_size")
    return spec.hf_config().vocab_size


def check_draft_weights(draft_dir: Path, target: ModelSpec, target_dir: Path | None) -> None:
    """A draft checkpoint suits its target (the catalog's `target`, its checkpoint in
    `target_dir` where real): a vocabulary of the target's size (up to padding), and where
    both directories hold a tokenizer, the same tokens. EngineError otherwise, before any GPU
    work."""
    target_vocab = vocab_size(target, target_dir)
    config = Path(draft_dir) / "config.json"
    if not config.is_file():
        raise EngineError(f"draft weights {draft_dir}: no config.json: not a checkpoint "
                          f"directory")
    _check_vocabulary(f"draft weights {draft_dir}", json.loads(config.read_text()).get(
        "vocab_size"), "the target", target_vocab)
    tokenizers = [d for d in (target_dir, Path(draft_dir)) if d is not None and any(
        (Path(d) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))]
    if len(tokenizers) == 2:
        from transformers import AutoTokenizer

        target_tokens, draft_tokens = (AutoTokenizer.from_pretrained(d, local_files_only=True)
                                       .get_vocab() for d in tokenizers)
        if target_tokens != draft_tokens:
            differ = sum(draft_tokens.get(t) != i for t, i in target_tokens.items())
            raise EngineError(f"draft weights {draft_dir}: its tokenizer differs from the "
                              f"target's ({differ} of {len(target_tokens)} tokens map to other "
                              f"ids): a draft must share its target's tokenizer")


@dataclass
class SpeculativeStats:
    """Counted over the sequences that still needed tokens in each round."""

    rounds: int = 0  # target verification passes after the prefill
    sequence_rounds: int = 0  # sequences verified, summed over rounds
    proposed: int = 0  # draft tokens put to the target
    accepted: int = 0  # of them, accepted
    rejected: int = 0  # sequence-rounds that ended in a rejection

    def as_dict(self) -> dict:
        return speculative_rates(asdict(self))


def speculative_generate(target, draft, ids, output_tokens: int, lookahead: int, *,
                         acceptance: float | None = None, generator=None,
                         on_first_token: Callable[[], None] | None = None):
    """Generate exactly `output_tokens` tokens for each row of `ids` (B x I prompt token ids,
    all of one length). Returns (tokens: B x output_tokens tensor, SpeculativeStats).
    `generator`: the torch.Generator of the acceptance draws."""
    import torch

    batch, length = ids.shape
    device = ids.device
    rows = torch.arange(batch, device=device)
    one = torch.ones(batch, 1, dtype=torch.long, device=device)
    if not (output_tokens >= 1 and lookahead >= 1):
        raise ValueError(f"output_tokens and lookahead must be at least 1, got "
                         f"{output_tokens} and {lookahead}")

    draft_vocab, target_vocab = draft.config.vocab_size, target.config.vocab_size

    def drop_last(mask, cache, n: int):
        """The mask and cache without their last n slots."""
        if n > 0:
            cache.crop(-n)
            mask = mask[:, :-n]
        return mask, cache

    def forward(model, tokens, positions, mask, cache, keep):
        # One tokenizer, embeddings padded differently: a padding row that random weights
        # chose (trained ones never do) is read as the other model's last row.
        tokens = tokens.clamp(max=(draft_vocab if model is draft else target_vocab) - 1)
        out = model(input_ids=tokens, position_ids=positions, attention_mask=mask,
                    past_key_values=cache, use_cache=True, logits_to_keep=keep)
        return out.logits.argmax(-1), out.past_key_values

    with torch.inference_mode():
        # Prefill: the draft's first (it belongs to the prefill), then the target's, whose
        # greedy token is the first output token.
        prompt_pos = torch.arange(length, device=device).expand(batch, -1)
        mask = torch.ones(batch, length, dtype=torch.long, device=device)
        _, draft_cache = forward(draft, ids, prompt_pos, mask, None, 1)
        first, target_cache = forward(target, ids, prompt_pos, mask, None, 1)
        last = first[:, -1]  # each sequence's newest token, not yet in the target's cache
        if on_first_token is not None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            on_first_token()
        target_mask, draft_mask = mask, mask.clone()
        pos = torch.full((batch,), length, device=device)  # the position of `last`
        # The draft has not seen `last` either, nor, after a round that accepted every
        # proposal, the last proposal: one or two pending tokens.
        before_last = torch.zeros(batch, dtype=torch.long, device=device)
        two_pending = torch.zeros(batch, dtype=torch.bool, device=device)
        out = torch.zeros(batch, output_tokens + 1, dtype=torch.long, device=device)
        out[:, 0] = last
        made = torch.ones(batch, dtype=torch.long, device=device)
        alive = torch.arange(batch, device=device)  # the sequences still in the batch
        stats = SpeculativeStats()
        while True:
            # Host reads stall the GPU's queue: two a round, each of several values.
            fewest, any_two, done = torch.stack([
                made.min(), two_pending.any().long(), (made >= output_tokens).sum()]).tolist()
            if (remaining := output_tokens - fewest) <= 0:
                break
            if done:  # finished sequences leave the batch, as in a serving engine
                keep = (made < output_tokens).nonzero().squeeze(1)
                target_cache.batch_select_indices(keep)
                draft_cache.batch_select_indices(keep)
                target_mask, draft_mask, pos, last, before_last, two_pending, made, alive = (
                    t[keep] for t in (target_mask, draft_mask, pos, last, before_last,
                                      two_pending, made, alive))
                batch = len(alive)
                rows, one = rows[:batch], one[:batch]
            k = min(lookahead, remaining - 1)  # a round gives up to k + 1 tokens
            proposals = last.new_zeros(batch, k)
            if k:
                if any_two:
                    step = torch.stack([before_last, last], 1)
                    step_pos = torch.stack([pos - 1, pos], 1)
                    draft_mask = torch.cat([draft_mask, two_pending[:, None].long(), one], 1)
                else:
                    step, step_pos = last[:, None], pos[:, None]
                    draft_mask = torch.cat([draft_mask, one], 1)
                for j in range(k):
                    choice, draft_cache = forward(draft, step, step_pos, draft_mask,
                                                  draft_cache, 1)
                    proposals[:, j] = choice[:, -1]
                    if j + 1 < k:  # the last proposal is not fed (see two_pending)
                        step, step_pos = proposals[:, j:j + 1], pos[:, None] + j + 1
                        draft_mask = torch.cat([draft_mask, one], 1)
            verify = torch.cat([last[:, None], proposals], 1)
            slots = torch.arange(k + 1, device=device)
            target_mask = torch.cat([target_mask, torch.ones_like(verify)], 1)
            choice, target_cache = forward(target, verify, pos[:, None] + slots, target_mask,
                                           target_cache, k + 1)
            if acceptance is None:
                agree = proposals == choice[:, :k]
            else:  # drawn where the generator lives (the engine's: on the GPU, no copy)
                agree = (torch.rand(batch, k, generator=generator,
                                    device=generator.device if generator else device)
                         < acceptance).to(device)
            kept = agree.long().cumprod(1).sum(1)  # proposals accepted, per sequence
            most, accepted, rejected = torch.stack([
                kept.max(), kept.sum(), (kept < k).sum()]).tolist()
            stats.rounds += 1
            stats.sequence_rounds += batch
            stats.proposed += k * batch
            stats.accepted += accepted
            stats.rejected += rejected
            # Each sequence keeps its accepted proposals and then the target's choice.
            new = torch.where(slots < kept[:, None], verify.roll(-1, 1), choice)
            index = made[:, None] + slots
            write = (slots <= kept[:, None]) & (index < output_tokens)
            mine = out.index_select(0, alive)
            mine.scatter_(1, torch.where(write, index, output_tokens), new)  # else: spare column
            out.index_copy_(0, alive, mine)
            # Hide the rejected slots, and drop the trailing ones that every sequence rejected.
            target_mask[:, -(k + 1):] = (slots <= kept[:, None]).long()
            target_mask, target_cache = drop_last(target_mask, target_cache, k - most)
            if k > 1:  # the draft was fed proposals 1 ... k-1
                draft_mask[:, -(k - 1):] = (slots[1:k] <= kept[:, None]).long()
                draft_mask, draft_cache = drop_last(draft_mask, draft_cache,
                                                    k - 1 - min(most, k - 1))
            two_pending = kept == k if k else torch.ones_like(two_pending)
            before_last = proposals[:, -1] if k else last
            last = new[rows, kept]
            made += kept + 1
            pos += kept + 1
    return out[:, :output_tokens], stats


def assisted_generate(target, draft, ids, output_tokens: int, lookahead: int, *, streamer=None,
                      **generate_kwargs):
    """transformers' assisted generation (batch 1 only), drafting `lookahead` tokens a round
    whatever the draft's confidence, counted as `speculative_generate` counts. Returns
    (tokens: 1 x output_tokens tensor, SpeculativeStats)."""
    if ids.shape[0] != 1:
        raise EngineError(f"transformers' assisted generation takes one sequence, not "
                          f"{ids.shape[0]}: use the batched loop (engine option "
                          f"speculative_path=loop)")
    config = draft.generation_config
    config.num_assistant_tokens = lookahead
    config.num_assistant_tokens_schedule = "constant"
    config.assistant_confidence_threshold = 0.0  # never stop drafting early
    stats = SpeculativeStats()
    original = target._get_candidate_generator

    def counting(*args, **kwargs):  # counts what each round proposed and accepted
        candidates = original(*args, **kwargs)
        get, update = candidates.get_candidates, candidates.update_candidate_strategy
        proposed: list[int] = []

        def get_candidates(input_ids, *a, **kw):
            out = get(input_ids, *a, **kw)
            proposed.append(out[0].shape[1] - input_ids.shape[1])
            return out

        def update_candidate_strategy(input_ids, scores, num_matches):
            stats.rounds += 1
            stats.sequence_rounds += 1
            stats.proposed += proposed[-1]
            stats.accepted += int(num_matches)
            stats.rejected += int(num_matches) < proposed[-1]
            return update(input_ids, scores, num_matches)

        candidates.get_candidates = get_candidates
        candidates.update_candidate_strategy = update_candidate_strategy
        return candidates

    target._get_candidate_generator = counting
    try:
        out = target.generate(ids, attention_mask=ids.new_ones(ids.shape), assistant_model=draft,
                              streamer=streamer, do_sample=False, max_new_tokens=output_tokens,
                              min_new_tokens=output_tokens, **generate_kwargs)
    finally:
        del target._get_candidate_generator  # the class's own again
    return out[:, ids.shape[1]:], stats
