"""vLLM's offline API: `vllm` (CUDA graphs and torch.compile: the study's optimized engine)
and `vllm-eager` (`enforce_eager=True`).

vLLM is imported only when one of these engines is loaded. Random weights use vLLM's dummy
load format over the catalog's config; real weights come from `--weights DIR`. Start-up
(compile, CUDA graph capture, KV cache allocation) costs minutes and kilojoules on an 8B
model: the runner measures it apart, and a sweep measures many points per start.

Speculative decoding is vLLM's own (`method: draft_model`): the draft is built with the
engine, so a decoding of another draft, look-ahead or acceptance starts vLLM again (in
`prepare`, measured apart; `expect` names the first one before `load`). With `acceptance`
set, vLLM's synthetic rejection sampling accepts each proposal with that probability until
the first rejection, both models running every forward pass: the measurement device of
infergy's own loop (infergy.engines.speculative), here inside vLLM's scheduler, CUDA graphs
and paged cache. Without it, proposals are compared with the target's tokens, as in use:
with random weights they agree almost never. The acceptance observed comes from vLLM's own
counters (stat logging on while speculating).

Beam search is vLLM's `LLM.beam_search`: one step at a time, each beam a request of one token
over its whole sequence, the prefix cache sparing all but the new token's prefill. It starts
vLLM with that cache (emptied before every run, so each run prefills its prompts; the user's
`enable_prefix_caching` stays theirs) and with a tokenizer, which it asks for: over random
weights, one of placeholder tokens (`write_placeholder_tokenizer`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from infergy.engines.base import Engine, EngineError, Generation
from infergy.engines.decoding import Decoding
from infergy.engines.speculative import check_draft, check_draft_weights, vocab_size
from infergy.models import ModelSpec
from infergy.models.build import write_placeholder_tokenizer
from infergy.models.flops import kv_cache_bytes_per_token, weight_bytes
from infergy.models.memory import batch_that_fits

# A host may turn NVLink multicast off (these settings, as a shared host whose GPUs a
# multicast program can put out of service does). vLLM 0.26 at TP > 1 fuses its all-reduce
# with the RMS norm through FlashInfer's "mnnvl" all-reduce, whose workspace creates
# multicast memory itself (cuMulticastCreate), whatever these say: on 2 H100s of such a host
# the first forward pass of CUDA graph capture failed (docs/measurements.md).
MULTICAST_OFF = (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
                 ("NVSHMEM_DISABLE_NVLS", "1"))
# There, vLLM runs without that fusion (the one user of FlashInfer's all-reduce in a dense
# model by default), and should FlashInfer's all-reduce or vLLM's symmetric-memory one be
# asked for, not in their multicast forms:
NO_MULTICAST_PASSES = {"fuse_allreduce_rms": False}
NO_MULTICAST_ENV = {"VLLM_FLASHINFER_ALLREDUCE_BACKEND": "trtllm",
                    "VLLM_ALLREDUCE_USE_SYMM_MEM": "0"}

INSTALL_HINT = (
    "vLLM is not installed: `pip install vllm` (it brings its own torch), or on a machine "
    "without a package index, the offline bundle of ../shared/tools/build-vllm-bundle.sh"
)


def without_multicast(tp: int, settings: dict) -> dict[str, str]:
    """Where this host turns NVLink multicast off and vLLM splits a model (`tp` > 1): the
    fusion that would create multicast memory turned off in `settings` (in a new
    `compilation_config`, unless that sets the pass itself), and the environment vLLM's
    processes run with, to set and record with the run: the host's settings that turn
    multicast off and vLLM's all-reduce choices (a value already set here kept). {}
    elsewhere."""
    off = {k: v for k, v in MULTICAST_OFF if os.environ.get(k) == v}
    if tp == 1 or not off:
        return {}
    compilation = settings.get("compilation_config") or {}
    if isinstance(compilation, int) and not isinstance(compilation, bool):
        compilation = {"mode": compilation}  # vLLM's shorthand for its compilation mode
    if not isinstance(compilation, dict):
        raise EngineError(f"compilation_config: a mapping or a mode number where NVLink "
                          f"multicast is off ({', '.join(off)}): infergy turns vLLM's "
                          f"all-reduce fusion off in it; got {compilation!r}")
    settings["compilation_config"] = {**compilation, "pass_config": {
        **NO_MULTICAST_PASSES, **(compilation.get("pass_config") or {})}}
    return {**off, **{k: os.environ.get(k, v) for k, v in NO_MULTICAST_ENV.items()}}


class VLLM(Engine):
    name = "vllm"
    description = "vLLM offline, CUDA graphs and torch.compile (the study's optimized engine)"
    decodings = ("greedy", "sample", "beam", "speculative")
    needs_gpu = True
    supports_tp = True
    enforce_eager = False
    _first = Decoding()  # the decoding vLLM is first started for (`expect`)
    _running: object = None  # the start key of the running vLLM
    llm = None

    @classmethod
    def start_key(cls, decoding: Decoding) -> object:
        if decoding.strategy == "speculative":
            return decoding  # its draft, look-ahead and acceptance
        return "beam" if decoding.strategy == "beam" else None  # every width on one start

    def expect(self, decoding: Decoding) -> None:
        super().expect(decoding)
        self._first = decoding

    def check_decoding(self, decoding: Decoding) -> None:
        super().check_decoding(decoding)
        self._speculative_config(decoding)

    def _speculative_config(self, decoding: Decoding) -> dict | None:
        """vLLM's speculative_config for `decoding` (None: not speculative); EngineError for
        a decoding that cannot run here (a draft; beam search over a checkpoint without a
        tokenizer), before any GPU work. Worked out once a decoding: every run asks."""
        known = self.__dict__.setdefault("_configs", {})
        if decoding not in known:
            if decoding.strategy == "beam" and self.weights is not None and not any(
                    Path(self.weights, name).is_file() for name in TOKENIZER_FILES):
                raise EngineError(f"beam search in {self.name}: vLLM's beam search needs the "
                                  f"checkpoint's tokenizer, and {self.weights} holds none "
                                  f"({', '.join(TOKENIZER_FILES)})")
            known[decoding] = self._new_speculative_config(decoding)
        return known[decoding]

    def _new_speculative_config(self, decoding: Decoding) -> dict | None:
        if decoding.strategy != "speculative":
            return None
        weights = self.options.get("draft_weights")
        if weights is not None:
            check_draft_weights(Path(weights), self.spec, self.weights)
        elif self.weights is not None:
            raise EngineError(
                f"speculative decoding in {self.name} with real target weights: vLLM loads "
                f"the draft as it loads the target, so give the draft's weights "
                f"(--draft-weights DIR), or use random weights for both")
        draft = check_draft(self.spec, decoding.draft)
        sizes = (vocab_size(draft, weights and Path(weights)), vocab_size(self.spec, self.weights))
        if sizes[0] != sizes[1] and weights is not None:  # vLLM checks it, but once started
            raise EngineError(
                f"speculative decoding in {self.name}: vLLM's draft_model method needs the "
                f"draft's vocabulary to equal the target's ({sizes[0]} and {sizes[1]} "
                f"tokens, one tokenizer padded differently); a random draft is padded to "
                f"the target's, and infergy's own loop (hf-eager) takes real weights of both")
        config = {"method": "draft_model", "model": weights or decoding.draft,
                  "num_speculative_tokens": decoding.lookahead}
        if decoding.acceptance is not None:
            p = decoding.acceptance
            # vLLM's rates are unconditional: position i's is that of all i + 1 accepted.
            config.update(rejection_sample_method="synthetic",
                          synthetic_acceptance_rates=[p ** (i + 1)
                                                      for i in range(decoding.lookahead)])
        return config

    def load(self) -> None:
        try:
            import vllm
        except ImportError as err:
            raise EngineError(f"{INSTALL_HINT} ({err})") from None
        self._vllm = vllm
        options = dict(self.options)
        options.pop("draft_weights", None)  # infergy's, in the speculative_config
        self._dir = tempfile.TemporaryDirectory(prefix="infergy-vllm-")
        if self.weights is not None:
            model, load_format = str(self.weights), "auto"
        else:
            _write_config(Path(self._dir.name, "target"), self.spec.config)
            model, load_format = str(Path(self._dir.name, "target")), "dummy"
        settings = {
            "model": model,
            "load_format": load_format,
            "dtype": self.dtype,
            "seed": self.seed,
            "enforce_eager": self.enforce_eager,
            "tensor_parallel_size": self.tp,
            "skip_tokenizer_init": self.weights is None,
            "gpu_memory_utilization": float(options.pop("gpu_memory_utilization", 0.9)),
            # The study's longest bin is 8,192 + 512 tokens; the KV cache is sized by memory,
            # not by this limit.
            "max_model_len": int(options.pop("max_model_len",
                                             min(self.spec.max_context, 16384))),
            "max_num_seqs": int(options.pop("max_num_seqs", 1024)),
            # A point runs the same prompts again and again (warm-up, repeats, the 1-token
            # prefill run): with vLLM's prefix cache every run after the first would skip its
            # prefill. Measured on an H100: B = 128 TTFT 0.12 s with it, against 1.9 s of
            # real prefill (docs/measurements.md).
            "enable_prefix_caching": bool(options.pop("enable_prefix_caching", False)),
        }
        settings.update(options)
        self.env = without_multicast(self.tp, settings)
        os.environ.update(self.env)  # vLLM's processes inherit it
        self._base = settings
        # vLLM forks its engine core unless torch has initialized CUDA here, but torch's
        # device count (torch.cuda.is_available, asked before an engine loads) already leaves
        # a forked child unable to use CUDA: spawn, always.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        self._start(self._first)

    def _start(self, decoding: Decoding) -> None:
        """Start vLLM for `decoding`: with its speculative_config, or beam search's settings."""
        settings = dict(self._base)
        speculation = self._speculative_config(decoding)
        if decoding.strategy == "beam":
            settings.update(self._beam_settings())
        if speculation is not None:
            draft, padded = speculation["model"], None
            if "draft_weights" not in self.options:  # random: the catalog's config, dummy
                config, padded = _draft_config(check_draft(self.spec, draft),
                                               vocab_size(self.spec, self.weights))
                draft = Path(self._dir.name, f"draft-{draft}")
                _write_config(draft, config)
            settings["speculative_config"] = {**speculation, "model": str(draft)}
            settings.setdefault("disable_log_stats", False)  # its counters: the acceptance
        self.settings = {k: v for k, v in settings.items() if k != "model"}
        if speculation is not None:  # recorded by the draft's name, not a temporary folder
            self.settings["speculative_config"] = speculation
            if padded:
                self.settings["draft_vocab_padded"] = padded
        try:
            self.llm = self._vllm.LLM(**settings)
        except (RuntimeError, ValueError) as e:  # start-up: the engine core's own log above
            raise EngineError(f"{self.name} failed to start: {e}") from None
        self._running = self.start_key(decoding)

    def _beam_settings(self) -> dict:
        """vLLM's settings for beam search: a tokenizer (`beam_search` asks for one: over
        random weights, placeholder tokens beside the config), and the prefix cache, which
        keeps each step's prefill to its new token, unless the user set it."""
        if self.weights is None:
            folder = Path(self._dir.name, "target")
            if not (folder / "tokenizer.json").is_file():
                write_placeholder_tokenizer(folder, vocab_size(self.spec))
        return {"skip_tokenizer_init": False,
                "enable_prefix_caching": bool(self.options.get("enable_prefix_caching", True))}

    def _stop(self) -> None:
        """Stop vLLM's engine core (its process holds the GPU memory) and drop the engine."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
        import gc

        gc.collect()

    def prepare(self, batch, input_tokens, output_tokens, decoding) -> None:
        """vLLM started again where `decoding` needs another start than the running one (a
        speculation, beam search; or where a start for another failed)."""
        if self.llm is None or self.start_key(decoding) != self._running:
            self._stop()
            self._start(decoding)

    def generate(self, prompts, output_tokens, decoding, on_first_token=None) -> Generation:
        self.check_decoding(decoding)
        if self.llm is None or self.start_key(decoding) != self._running:
            raise EngineError(f"{self.name} is not running for {decoding.label()}: prepare "
                              f"it for this decoding first")
        if decoding.strategy == "beam":
            return self._beam_search(prompts, output_tokens, decoding)
        params = self._vllm.SamplingParams(
            n=1,
            max_tokens=output_tokens,
            min_tokens=output_tokens,
            ignore_eos=True,  # every request runs to its full length
            temperature=decoding.temperature if decoding.sampling else 0.0,
            top_p=decoding.top_p if decoding.sampling else 1.0,
            seed=decoding.seed if decoding.sampling else None,
            detokenize=False,
        )
        # Running for this decoding (checked above): speculating where it speculates.
        before = self._spec_counts() if decoding.strategy == "speculative" else None
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                    use_tqdm=False)
        lengths = self._checked([len(o.outputs[0].token_ids) for o in outputs], prompts,
                                output_tokens)
        stats = {}
        if before is not None:
            after = self._spec_counts()
            stats = {k: after[k] - before[k] for k in after}
            stats["rounds"] = None  # the target's passes over the batch: vLLM does not say
        return Generation(output_tokens=lengths, stats=stats)

    def _beam_search(self, prompts, output_tokens, decoding) -> Generation:
        """vLLM's beam search, `decoding.beams` beams a prompt, every beam to its full length;
        the prefix cache emptied first, so that this run prefills its prompts."""
        if self.settings["enable_prefix_caching"] and not self.llm.reset_prefix_cache():
            raise EngineError(f"{self.name} could not empty its prefix cache before a beam "
                              f"search run: the run would skip its prompts' prefill")
        from importlib import import_module

        params = import_module("vllm.sampling_params").BeamSearchParams(
            beam_width=decoding.beams, max_tokens=output_tokens, ignore_eos=True)
        outputs = self.llm.beam_search([{"prompt_token_ids": p} for p in prompts], params)
        # A beam's tokens begin with its prompt's; a missing output is _checked's to name.
        lengths = [len(o.sequences[0].tokens) - len(p)
                   for o, p in zip(outputs, prompts, strict=False)]
        return Generation(output_tokens=self._checked(lengths, prompts, output_tokens))

    def _checked(self, lengths: list[int], prompts, output_tokens: int) -> list[int]:
        """The output lengths of a run, EngineError unless every prompt got its tokens."""
        if len(lengths) != len(prompts) or any(n != output_tokens for n in lengths):
            raise EngineError(f"{self.name} generated {sorted(set(lengths))} tokens for "
                              f"{len(lengths)} of {len(prompts)} prompts, not {output_tokens}")
        return lengths

    def _spec_counts(self) -> dict:
        """vLLM's speculative counters so far, as infergy's counts: `sequence_rounds` (vLLM's
        drafts), `proposed` (draft tokens), `accepted`, and `rejected`: drafts that were not
        accepted whole (each ends at its one rejection; a draft cut short by the request's
        last tokens and accepted whole counts as rejected too)."""
        counters, per_position = {}, None
        for metric in self.llm.get_metrics():
            if metric.name == "vllm:spec_decode_num_accepted_tokens_per_pos":
                values = list(metric.values)
                per_position = values if per_position is None else [
                    a + b for a, b in zip(per_position, values, strict=True)]
            elif metric.name in SPEC_COUNTERS:
                counters[metric.name] = counters.get(metric.name, 0) + metric.value
        drafts = counters.get("vllm:spec_decode_num_drafts", 0)
        whole = per_position[-1] if per_position else 0
        return {"sequence_rounds": drafts,
                "proposed": counters.get("vllm:spec_decode_num_draft_tokens", 0),
                "accepted": counters.get("vllm:spec_decode_num_accepted_tokens", 0),
                "rejected": drafts - whole}

    def max_batch(self, input_tokens, output_tokens):
        """How many sequences of I + O tokens vLLM's KV cache holds at once (beyond that it
        queues or preempts rather than failing), capped by max_num_seqs."""
        limit = self.settings["max_num_seqs"]
        try:
            cache = self.llm.llm_engine.vllm_config.cache_config
            blocks, block = int(cache.num_gpu_blocks), int(cache.block_size)
        except (AttributeError, TypeError):
            blocks = None
        if blocks:
            per = math.ceil((input_tokens + output_tokens) / block)
            return min(blocks // per, limit), {
                "method": "vLLM's KV cache capacity", "gpu_blocks": blocks,
                "block_size": block, "max_num_seqs": limit}

        total = self.tp * self._total_gpu_bytes() * self.settings["gpu_memory_utilization"]
        kv_space = total - weight_bytes(self.spec) - self.tp * 2 * 2**30  # activations, graphs
        per = kv_cache_bytes_per_token(self.spec) * (input_tokens + output_tokens)
        return min(batch_that_fits(kv_space, per), limit), {
            "method": "memory model: vLLM's share of the cards less the weights and 2 GiB each",
            "max_num_seqs": limit}

    @staticmethod
    def _total_gpu_bytes() -> int:
        import torch

        return torch.cuda.mem_get_info()[1]

    def info(self) -> dict:
        return {**super().info(), "vllm": self._vllm.__version__, **self.settings,
                **({"env": self.env} if self.env else {})}

    def close(self) -> None:
        self.llm = None
        if getattr(self, "_dir", None) is not None:
            self._dir.cleanup()


# vLLM's speculative counters (Prometheus, in this process): summed over its engines.
SPEC_COUNTERS = ("vllm:spec_decode_num_drafts", "vllm:spec_decode_num_draft_tokens",
                 "vllm:spec_decode_num_accepted_tokens")


# What a checkpoint's tokenizer is saved as (transformers' fast, sentencepiece, the config).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def _draft_config(draft: ModelSpec, target_vocab: int) -> tuple[dict, str | None]:
    """A random draft's config for vLLM's draft_model method, which needs the target's
    vocabulary size: a draft of one tokenizer padded otherwise (DeepSeek-R1-Distill-Qwen-1.5B's
    151,936 rows, the 32B's 152,064) gets the target's, rows past the tokenizer's meaning no
    token (128 more of 1,536 wide: 0.08% of the draft's logits); and what was padded, in words
    (None: nothing)."""
    config = dict(draft.config)
    if config.get("vocab_size") == target_vocab:
        return config, None
    said = f"{config.get('vocab_size')} -> {target_vocab} rows, to the target's (random weights)"
    return {**config, "vocab_size": target_vocab}, said


def _write_config(folder: Path, config: dict) -> None:
    """A model folder holding only its config: vLLM's dummy weights fill the rest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))


class VLLMEager(VLLM):
    name = "vllm-eager"
    description = "vLLM offline with enforce_eager=True (no CUDA graphs, no compile)"
    enforce_eager = True
