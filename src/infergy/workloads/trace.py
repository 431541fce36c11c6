"""A workload: the input and output token counts of its requests (and when they arrived), read
from the formats real traces come in. Everything is a numpy column: a trace of millions of
requests is loaded and described without a Python loop per request.

Formats:
- `azure`: the Azure LLM inference traces (2023 and 2024): TIMESTAMP, ContextTokens,
  GeneratedTokens.
- `burstgpt`: BurstGPT's eight columns; failed requests (Response tokens = 0) are dropped and
  counted; filter by `Model` and `Log Type`.
- `table`: any CSV, JSONL or Parquet file with a column mapping (input, output, optional time).
- `sharegpt`: ShareGPT-style JSON (a list of {"conversations": [{"from": "human", "value":
  ...}, {"from": "gpt", ...}]}): the first user turn and the assistant's answer, counted in
  tokens by a given tokenizer (lengths depend on it). A file cut mid-record, as the public
  ShareGPT V3 file is, is read up to the cut, which is counted.

Every malformed value is an error naming the file, the line (as a text editor counts them,
header included) and the column, unless `skip_bad` is set: then such rows are dropped and
counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AZURE = {"input": "ContextTokens", "output": "GeneratedTokens", "time": "TIMESTAMP"}
BURSTGPT = {"input": "Request tokens", "output": "Response tokens", "time": "Timestamp",
            "model": "Model", "log_type": "Log Type"}
FORMATS = ("azure", "burstgpt", "table", "sharegpt")
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "chatgpt", "bing", "bard")


class TraceError(ValueError):
    """A trace that cannot be read as asked; the message names the file, line and column."""


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


def load_trace(path: str | Path, fmt: str | None = None, *, input_col: str | None = None,
               output_col: str | None = None, time_col: str | None = None,
               model: str | None = None, log_type: str | None = None,
               skip_bad: bool = False, tokenizer=None) -> Trace:
    """Read a trace file. `fmt` None: guessed from the columns (azure, burstgpt), else a
    table with the given columns."""
    path = Path(path)
    if fmt == "sharegpt":
        return load_sharegpt(path, tokenizer)
    frame = _read(path)
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
            raise TraceError(f"{path}: columns {', '.join(map(str, frame.columns[:8]))} are "
                             f"not a known trace format: give --input-col and --output-col")
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
    """Input, output and time columns by their common names (any case), or None."""
    by_lower = {str(c).lower(): c for c in columns}
    return {role: next((by_lower[n] for n in names if n in by_lower), None)
            for role, names in GUESSES.items()}


def _read(path: Path):
    import pandas as pd

    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True)
        else:
            frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: empty file") from None
    except (pd.errors.ParserError, ValueError, ImportError) as err:
        raise TraceError(f"{path}: cannot be read as {suffix.lstrip('.') or 'csv'}: "
                         f"{err}") from None
    if frame.empty:
        raise TraceError(f"{path}: no rows")
    # Where a row sits in the file: after a header line (CSV), on its own line (JSONL), or
    # by its row number (Parquet has no lines).
    frame.attrs["first_line"] = {".parquet": None, ".jsonl": 1, ".ndjson": 1}.get(suffix, 2)
    if len(frame.columns) == 1 and suffix not in (".parquet", ".jsonl", ".ndjson"):
        raise TraceError(f"{path}: one column ({frame.columns[0]!r}): is the delimiter not "
                         f"a comma?")
    return frame


def _require(path: Path, frame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TraceError(f"{path}: no column {missing[0]!r}; the file has "
                         f"{', '.join(map(str, frame.columns))}")


def _tokens(path: Path, frame, column: str, skip_bad: bool, dropped: dict) -> np.ndarray:
    """A token-count column as float (NaN where a skipped row was bad)."""
    import pandas as pd

    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, copy=True)
    bad = np.isnan(values) | (values < 0) | (values != np.floor(values))
    if bad.any():
        if not skip_bad:
            n = int(np.argmax(bad))
            raise TraceError(f"{path}: {_line(frame, n)}, column {column!r}: expected a "
                             f"whole number of tokens >= 0, got {_shown(raw.iloc[n])} (--skip-bad "
                             f"skips and counts such rows)")
        dropped[f"bad {column}"] = int(bad.sum())
        values[bad] = np.nan
    return values


def _shown(value) -> str:
    """A cell as the file wrote it: 'abc' for text, -4 for a number (not np.int64(-4))."""
    return repr(value) if isinstance(value, str) else str(value)


def _line(frame, n: int) -> str:
    """Where the frame's n-th row is in its file: "line L", or "row R" (Parquet)."""
    first = frame.attrs.get("first_line", 2)
    return f"row {int(frame.index[n]) + 1}" if first is None else \
        f"line {int(frame.index[n]) + first}"


def _times(path: Path, frame, column: str, good: np.ndarray) -> np.ndarray | None:
    import pandas as pd

    raw = frame[column][good]
    if pd.api.types.is_numeric_dtype(raw):
        seconds = raw.to_numpy(dtype=float)
        if np.isnan(seconds).any():
            n = int(np.argmax(np.isnan(seconds)))
            raise TraceError(f"{path}: {_line(frame[good], n)}, column {column!r}: "
                             f"expected a time, got an empty cell")
    else:
        try:  # the fast path: ISO 8601 times, as the Azure and BurstGPT files have
            stamps = pd.to_datetime(raw, format="ISO8601")
        except (ValueError, TypeError):
            stamps = pd.to_datetime(raw, errors="coerce", format="mixed")
        if stamps.isna().any():
            n = int(np.argmax(stamps.isna().to_numpy()))
            raise TraceError(f"{path}: {_line(frame[good], n)}, column {column!r}: "
                             f"expected a time, got {raw.iloc[n]!r}")
        seconds = (stamps - stamps.min()).dt.total_seconds().to_numpy()
    return seconds - seconds.min()


def _say(dropped: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in dropped.items() if v)


def load_sharegpt(path: Path, tokenizer) -> Trace:
    """A ShareGPT-style JSON file; `tokenizer`: a transformers tokenizer, or the folder or
    name `AutoTokenizer.from_pretrained` loads."""

    if tokenizer is None:
        raise TraceError(f"{path}: ShareGPT holds text: give a tokenizer (--tokenizer DIR) to "
                         f"count its tokens")
    if isinstance(tokenizer, str | Path):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        except (OSError, ValueError) as err:
            raise TraceError(f"tokenizer {tokenizer}: cannot be loaded: {err}") from None
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    try:
        records, cut = _json_records(path.read_text())
    except TraceError as err:
        raise TraceError(f"{path}: {err}") from None
    prompts, answers, dropped = [], [], {}
    for record in records:
        turns = []
        if isinstance(record, dict):
            turns = record.get("conversations") or record.get("conversation") or []
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
