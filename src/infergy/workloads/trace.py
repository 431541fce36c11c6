"""A workload: the input and output token counts of its requests (and when they arrived), read
from the formats real traces come in. Everything is a numpy column: a trace of millions of
requests is loaded and described without a Python loop per request.

Formats:
- `azure`: the Azure LLM inference traces (2023 and 2024): TIMESTAMP, ContextTokens,
  GeneratedTokens.
- `burstgpt`: BurstGPT's eight columns; failed requests (Response tokens = 0) are dropped and
  counted; filter by `Model` and `Log Type`.
- `table`: any CSV, JSONL, JSON list of records or Parquet file with a column mapping (input,
  output, optional time); nested records are flattened (an API's `usage.prompt_tokens`).
- `sharegpt`: ShareGPT-style JSON (a list of {"conversations": [{"from": "human", "value":
  ...}, {"from": "gpt", ...}]}, or one such record a line; OpenAI's `messages` with `role` and
  `content` too): the first user turn and the assistant's answer, counted in tokens by a given
  tokenizer (lengths depend on it). A file cut mid-record, as the public ShareGPT V3 file is,
  is read up to the cut, which is counted.

Every malformed value is an error naming the file, the line (as a text editor counts them,
header included) and the column, unless `skip_bad` is set: then such rows are dropped and
counted. A token count is a whole number from 0 to MAX_TOKENS. Times with a time zone are
taken in UTC; times with one and times without in one file are refused (no zone to assume).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from infergy.workloads.reading import (
    CONVERSATION_KEYS,
    SHAREGPT_HINT,
    FileProblem,
    TraceError,
    read_table,
    read_text,
)

AZURE = {"input": "ContextTokens", "output": "GeneratedTokens", "time": "TIMESTAMP"}
BURSTGPT = {"input": "Request tokens", "output": "Response tokens", "time": "Timestamp",
            "model": "Model", "log_type": "Log Type"}
FORMATS = ("azure", "burstgpt", "table", "sharegpt")
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "chatgpt", "bing", "bard")
# Tokens a request may hold: past any model's context, so a larger count is a broken file
# (1e30 would wrap around int64), not a request.
MAX_TOKENS = 10_000_000


@dataclass
class Trace:
    name: str
    input_tokens: np.ndarray  # int64, one per request
    output_tokens: np.ndarray  # int64
    arrival_s: np.ndarray | None = None  # seconds from the first request, where known
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)  # why -> rows
    notes: str = ""

    def __len__(self) -> int:
        return len(self.input_tokens)

    @property
    def span_s(self) -> float | None:
        if self.arrival_s is None or len(self.arrival_s) < 2:
            return None
        return float(self.arrival_s.max() - self.arrival_s.min())

    def within(self, max_tokens: int) -> tuple[Trace, int]:
        """The requests whose input and output together fit `max_tokens` (a model's context),
        at their own times, and how many do not (this trace itself where all fit)."""
        fits = self.input_tokens + self.output_tokens <= max_tokens
        over = int((~fits).sum())
        if not over:
            return self, 0
        return replace(self, input_tokens=self.input_tokens[fits],
                       output_tokens=self.output_tokens[fits],
                       arrival_s=None if self.arrival_s is None else self.arrival_s[fits]), over


def load_trace(path: str | Path, fmt: str | None = None, *, input_col: str | None = None,
               output_col: str | None = None, time_col: str | None = None,
               model: str | None = None, log_type: str | None = None,
               skip_bad: bool = False, tokenizer=None) -> Trace:
    """Read a trace file. `fmt` None: guessed from the columns (azure, burstgpt), else a
    table with the given columns."""
    path = Path(path)
    if fmt == "sharegpt":
        return load_sharegpt(path, tokenizer)
    frame = read_table(path)
    if fmt is None:
        fmt = ("azure" if set(AZURE.values()) <= set(frame.columns) else
               "burstgpt" if {BURSTGPT["input"], BURSTGPT["output"]} <= set(frame.columns)
               else "table")
    if fmt not in FORMATS:
        raise TraceError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    dropped: dict[str, int] = {}
    if fmt == "azure":
        cols = dict(AZURE)
    elif fmt == "burstgpt":
        cols = {k: BURSTGPT[k] for k in ("input", "output", "time")}
        _require(path, frame, [BURSTGPT["model"], BURSTGPT["log_type"]] if model or log_type
                 else [])
        for column, wanted in ((BURSTGPT["model"], model), (BURSTGPT["log_type"], log_type)):
            if wanted is not None:
                keep = frame[column].astype(str) == wanted
                if not keep.any():
                    values = ", ".join(sorted(frame[column].astype(str).unique())[:10])
                    raise TraceError(f"{path}: no row has {column} = {wanted!r}; it has "
                                     f"{values}")
                dropped[f"{column} is not {wanted}"] = int((~keep).sum())
                frame = frame[keep]
    else:
        guessed = _guess_columns(frame.columns)
        cols = {"input": input_col or guessed["input"], "output": output_col or
                guessed["output"], "time": time_col or (guessed["time"] if not (
                    input_col or output_col) else None)}
        if cols["input"] is None or cols["output"] is None:
            raise TraceError(_unknown_columns(path, frame))
    _require(path, frame, [c for c in cols.values() if c])
    inputs = _tokens(path, frame, cols["input"], skip_bad, dropped)
    outputs = _tokens(path, frame, cols["output"], skip_bad, dropped)
    good = ~(np.isnan(inputs) | np.isnan(outputs))
    if fmt == "burstgpt":
        failed = good & (outputs == 0)
        dropped["failed requests (0 response tokens)"] = int(failed.sum())
        good &= ~failed
    arrival = _times(path, frame, cols["time"], good) if cols.get("time") else None
    if not good.any():
        raise TraceError(f"{path}: no request left to estimate ({_say(dropped) or 'empty'})")
    return Trace(name=path.name, input_tokens=inputs[good].astype(np.int64),
                 output_tokens=outputs[good].astype(np.int64), arrival_s=arrival,
                 source=f"{path} ({fmt})", dropped={k: v for k, v in dropped.items() if v})


# Column names that common traces and benchmarks use, lower-cased, most specific first.
GUESSES = {
    "input": ("input_tokens", "prompt_tokens", "num_prompt_tokens", "input_length",
              "input_len", "prompt_len", "prompt_length", "context_tokens", "request_tokens",
              "request tokens", "contexttokens", "isl"),
    "output": ("output_tokens", "completion_tokens", "num_completion_tokens", "output_length",
               "output_len", "completion_len", "generated_tokens", "response_tokens",
               "response tokens", "generatedtokens", "osl"),
    "time": ("timestamp", "arrival_time", "arrival_s", "time", "created"),
}


def _guess_columns(columns) -> dict[str, str | None]:
    """Input, output and time columns by their common names (any case; a nested record's
    "usage.prompt_tokens" by its last part), or None."""
    by_lower = {str(c).lower().rsplit(".", 1)[-1]: c for c in reversed(columns)}
    by_lower |= {str(c).lower(): c for c in columns}
    return {role: next((by_lower[n] for n in names if n in by_lower), None)
            for role, names in GUESSES.items()}


def _unknown_columns(path: Path, frame) -> str:
    """Why a table's columns are not a trace, and what to give."""
    columns = ", ".join(map(str, frame.columns[:8])) + (", ..." if len(frame.columns) > 8
                                                        else "")
    if any(str(c).lower() in CONVERSATION_KEYS for c in frame.columns):
        return f"{path}: records of conversations ({columns}), as ShareGPT's: {SHAREGPT_HINT}"
    return (f"{path}: columns {columns} are not a known trace format: give --input-col and "
            f"--output-col (columns of token counts), or --format (azure, burstgpt, "
            f"sharegpt)")


def _require(path: Path, frame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TraceError(f"{path}: no column {missing[0]!r}; the file has "
                         f"{', '.join(map(str, frame.columns))}")


def _tokens(path: Path, frame, column: str, skip_bad: bool, dropped: dict) -> np.ndarray:
    """A token-count column as float (NaN where a skipped row was bad)."""
    import pandas as pd

    raw = frame[column]
    with np.errstate(invalid="ignore", over="ignore"):
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, copy=True)
        bad = ~np.isfinite(values) | (values < 0) | (values > MAX_TOKENS) | (
            values != np.floor(values))
    if pd.api.types.is_bool_dtype(raw):  # JSON's true is no count of tokens
        bad[:] = True
    elif raw.dtype == object:
        bad |= raw.map(lambda v: isinstance(v, bool)).to_numpy(dtype=bool)
    if bad.any():
        if not skip_bad:
            n = int(np.argmax(bad))
            raise TraceError(f"{path}: {_line(frame, n)}, column {column!r}: expected a "
                             f"whole number of tokens from 0 to {MAX_TOKENS:,}, got "
                             f"{_shown(raw.iloc[n])} (--skip-bad skips and counts such rows)")
        dropped[f"bad {column}"] = int(bad.sum())
        values[bad] = np.nan
    return values


def _shown(value) -> str:
    """A cell as the file wrote it: 'abc' for text, -4 for a number (not np.int64(-4))."""
    return repr(value) if isinstance(value, str) else str(value)


def _line(frame, n: int) -> str:
    """Where the frame's n-th row is in its file: "line L", or "record R" (a JSON list) or "row
    R" (Parquet)."""
    first = frame.attrs.get("first_line", 2)
    return f"{frame.attrs.get('unit', 'row')} {int(frame.index[n]) + 1}" if first is None \
        else f"line {int(frame.index[n]) + first}"


# A numeric time past this many seconds is no time in seconds (the year 5138 since 1970,
# 3,170 years since a trace's start): epoch milliseconds (1.7e12 in 2023) or finer.
EPOCH_SECONDS_MAX = 1e11


def _times(path: Path, frame, column: str, good: np.ndarray) -> np.ndarray | None:
    """Seconds from the first request: a column of seconds, or of times (ISO 8601 or any
    form pandas reads; those with a time zone in UTC)."""
    import pandas as pd

    raw, kept = frame[column][good], frame[good]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        seconds = raw.to_numpy(dtype=float)
        if not np.isfinite(seconds).all():
            n = int(np.argmax(~np.isfinite(seconds)))
            got = "an empty cell" if np.isnan(seconds[n]) else _shown(raw.iloc[n])
            raise TraceError(f"{path}: {_line(kept, n)}, column {column!r}: expected a time, "
                             f"got {got}")
        if len(seconds) and seconds.min() > EPOCH_SECONDS_MAX:
            raise TraceError(f"{path}: column {column!r}: numbers from {seconds.min():.4g} are "
                             f"epoch milliseconds (or finer), not seconds, which a numeric time "
                             f"column is read as (its requests would arrive 1,000 times too "
                             f"far apart): give seconds, or ISO 8601 times")
        return seconds - seconds.min()
    stamps = raw if isinstance(raw.dtype, pd.DatetimeTZDtype) or \
        pd.api.types.is_datetime64_dtype(raw) else _stamps(path, kept, column, raw)
    if stamps.isna().any():
        n = int(np.argmax(stamps.isna().to_numpy()))
        raise TraceError(f"{path}: {_line(kept, n)}, column {column!r}: expected a time, got "
                         f"{_shown(raw.iloc[n])}")
    seconds = (stamps - stamps.min()).dt.total_seconds().to_numpy()
    return seconds - seconds.min()


# A time that names its zone: "...12:00:00Z", "+02:00", "-0500", " UTC".
ZONED = r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(?:Z|[+-]\d\d(?::?\d\d)?|UTC|GMT)\s*$"


def _stamps(path: Path, kept, column: str, raw):
    """Text times as datetimes (NaT where one cannot be read). All with a zone: in UTC, so
    +02:00 and Z mix; none with one: as written; some with, some without: TraceError naming
    the first line that differs from the first time."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():  # pandas 2 warns of mixed zones where pandas 3 raises
        warnings.simplefilter("ignore")
        try:  # the fast path: ISO 8601 times in one zone, as the Azure and BurstGPT files have
            stamps = pd.to_datetime(raw, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            stamps = None
        # Naive times are safe; pandas 2 gives a time without a zone after one with a zone
        # that zone: each is checked.
        if stamps is not None and stamps.dtype != object and stamps.dt.tz is None:
            return stamps
        zoned = raw.astype(str).str.contains(ZONED, case=False, regex=True).to_numpy()
        if stamps is not None and stamps.dtype != object and zoned.all():
            return stamps
        if zoned.any() and not zoned.all():
            n = int(np.argmax(zoned != zoned[0]))
            has = "has a" if zoned[n] else "has no"
            first = "has none" if zoned[n] else "has one"
            raise TraceError(f"{path}: {_line(kept, n)}, column {column!r}: {raw.iloc[n]!r} "
                             f"{has} time zone, but {_line(kept, 0)} ({raw.iloc[0]!r}) "
                             f"{first}: give every time a zone (then taken in UTC), or none")
        try:
            return pd.to_datetime(raw, errors="coerce", format="mixed", utc=bool(zoned.all()))
        except (ValueError, TypeError, OverflowError) as err:  # zones it cannot reconcile
            raise TraceError(f"{path}: column {column!r}: times that cannot be read together "
                             f"({str(err).splitlines()[0]}); give ISO 8601 times, all with a "
                             f"zone or none") from None


def _say(dropped: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in dropped.items() if v)


def load_sharegpt(path: Path, tokenizer) -> Trace:
    """A ShareGPT-style JSON file (a list, or one record a line); `tokenizer`: a transformers
    tokenizer, or the folder or name `AutoTokenizer.from_pretrained` loads."""
    try:
        text = read_text(path, "JSON text file", limit=None)
    except FileProblem as err:
        raise TraceError(f"{path}: {err}") from None
    if tokenizer is None:
        raise TraceError(f"{path}: ShareGPT holds text: give a tokenizer (--tokenizer DIR) to "
                         f"count its tokens")
    if isinstance(tokenizer, str | Path):
        from transformers import AutoTokenizer

        folder = Path(tokenizer).expanduser()
        if str(tokenizer).startswith(("/", ".", "~")) and not folder.is_dir():
            raise TraceError(f"tokenizer {tokenizer}: no such folder (a tokenizer's folder, "
                             f"with its tokenizer.json or vocabulary)")

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        except (OSError, ValueError) as err:
            raise TraceError(f"tokenizer {tokenizer}: cannot be loaded: {err}") from None
    try:
        records, cut = (_json_lines if text.lstrip().startswith("{") else _json_records)(text)
    except TraceError as err:
        raise TraceError(f"{path}: {err}") from None
    prompts, answers, dropped = [], [], {}
    for record in records:
        turns = []
        if isinstance(record, dict):
            turns = next((record[k] for k in CONVERSATION_KEYS if record.get(k)), [])
        pair = _first_exchange(turns)
        if pair is None:
            dropped["no user turn with an answer"] = dropped.get(
                "no user turn with an answer", 0) + 1
            continue
        prompts.append(pair[0])
        answers.append(pair[1])
    if cut:
        dropped["record cut at the end of the file"] = 1
    if not prompts:
        raise TraceError(f"{path}: no conversation with a user turn and an answer")

    def count(texts: list[str]) -> np.ndarray:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))

    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return Trace(name=path.name, input_tokens=count(prompts), output_tokens=count(answers),
                 source=f"{path} (sharegpt, tokens by {name})", dropped=dropped)


def _json_lines(text: str) -> tuple[list, bool]:
    """The records of one JSON record a line: a last line cut mid-record is left out (and
    True); a bad line before it is a TraceError naming it."""
    import json

    lines = text.splitlines()
    last = max((n for n, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for n, line in enumerate(lines):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                if n == last:
                    return records, True
                raise TraceError(f"line {n + 1}: not a JSON record ({err.msg})") from None
    return records, False


def _json_records(text: str) -> tuple[list, bool]:
    """The records of a JSON list, decoded one by one: a list cut mid-record yields every
    whole record before the cut (and True)."""
    import json

    decoder = json.JSONDecoder()
    start = text.find("[")
    if start < 0:
        raise TraceError("not a JSON list of conversations")
    records, pos, cut = [], start + 1, False
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            cut = True
            break
        if text[pos] == "]":
            break
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            cut = True
            break
        records.append(record)
    return records, cut


def _first_exchange(turns: list) -> tuple[str, str] | None:
    for n, turn in enumerate(turns[:-1]):
        if not isinstance(turn, dict) or str(turn.get("from", turn.get("role", ""))).lower() \
                not in USER_ROLES:
            continue
        answer = turns[n + 1]
        if isinstance(answer, dict) and str(answer.get("from", answer.get("role", ""))
                                            ).lower() in ASSISTANT_ROLES:
            text = turn.get("value", turn.get("content"))
            reply = answer.get("value", answer.get("content"))
            if isinstance(text, str) and isinstance(reply, str):
                return text, reply
    return None
