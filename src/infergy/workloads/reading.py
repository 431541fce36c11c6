"""What a file given as a trace or a spec is, before it is parsed: a readable file, text rather
than bytes (an SQLite store, an image, UTF-16 text), and for a trace the shape of its records
(a table, a JSON list of records, one record a line, conversations), read into a table of
columns. Every problem is one line naming the file and what was found instead.
"""

from __future__ import annotations

import json
from pathlib import Path

HEAD_BYTES = 1 << 20  # enough of a file to tell what it is, and its first JSON record
# Magic numbers of what is given by mistake, most specific first.
MAGIC = ((b"SQLite format 3\x00", "an SQLite database"), (b"\x89PNG", "a PNG image"),
         (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"%PDF", "a PDF file"),
         (b"PK\x03\x04", "a zip archive"), (b"\x1f\x8b", "gzip-compressed data"),
         (b"PAR1", "a Parquet file"), (b"\x7fELF", "a program"),
         (b"\x00\x00\xfe\xff", "UTF-32 text: save it as UTF-8"),
         (b"\xff\xfe\x00\x00", "UTF-32 text: save it as UTF-8"),
         (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
         (b"\xfe\xff", "UTF-16 text: save it as UTF-8"))
CONVERSATION_KEYS = ("conversations", "conversation", "messages")
SHAREGPT_HINT = ("give --format sharegpt and --tokenizer DIR (its requests are text: the "
                 "model's tokenizer counts their tokens)")


class TraceError(ValueError):
    """A trace that cannot be read as asked; the message names the file, line and column."""


class FileProblem(ValueError):
    """A path that is not a readable file of the kind asked; the message is the reason, for
    the caller to put after the path."""


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first `size` bytes of the file at `path`. FileProblem where there is none, it is a
    folder or not a plain file, or it cannot be read (its reason: "Permission denied")."""
    if path.is_dir():
        raise FileProblem("is a folder, not a file")
    if not path.exists():
        raise FileProblem("no such file")
    if not path.is_file():
        raise FileProblem("not a plain file")
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError as err:
        raise FileProblem(f"cannot be read ({err.strerror or err})") from None


def binary_kind(head: bytes) -> str | None:
    """What the first bytes of a file show it is when that is not UTF-8 text ("an SQLite
    database", "UTF-16 text: save it as UTF-8", "binary data ..."), or None for text. A UTF-8
    byte-order mark is text."""
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    if b"\x00" in head:
        ascii_16 = head[1::2].count(0) > len(head) // 4 or head[0::2].count(0) > len(head) // 4
        return "UTF-16 text: save it as UTF-8" if ascii_16 else "binary data"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.reason != "unexpected end of data":  # not a character cut by the head's end
            return (f"binary data, or text not in UTF-8: byte {head[err.start]:#04x} at "
                    f"offset {err.start}")
    return None


def read_text(path: Path, what: str, limit: int | None = 16 << 20) -> str:
    """A whole text file (UTF-8, with or without a byte-order mark). FileProblem where it is
    not one: "not a {what} (an SQLite database)", or larger than `limit` bytes (None: any
    size)."""
    kind = binary_kind(read_head(path, 4096))
    if kind is None and limit is not None and path.stat().st_size > limit:
        kind = f"{path.stat().st_size:,} bytes, more than {limit:,}"
    if kind is None:
        try:
            return path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as err:
            kind = (f"binary data, or text not in UTF-8: byte {err.object[err.start]:#04x} at "
                    f"offset {err.start}")
        except OSError as err:
            raise FileProblem(f"cannot be read ({err.strerror or err})") from None
    raise FileProblem(f"not a {what} ({kind})")


def read_table(path: Path):
    """A trace file as a pandas DataFrame: CSV, JSONL (one record a line), a JSON list of
    records, or Parquet (by its suffix or its first bytes). Its attrs say where a row is in the
    file: "first_line" (the line of row 0, or None) and "unit" ("line", "record" or "row").
    TraceError naming the file where it cannot be read, is empty, or holds conversations
    (ShareGPT: --format sharegpt)."""
    import pandas as pd

    try:
        head = read_head(path)
    except FileProblem as err:
        raise TraceError(f"{path}: {err}") from None
    suffix = path.suffix.lower()
    kind = "parquet" if suffix == ".parquet" or head.startswith(b"PAR1") else None
    if kind is None:
        found = binary_kind(head)
        if found:
            raise TraceError(f"{path}: not a trace file ({found}); a trace is CSV, JSONL, a "
                             f"JSON list of records or Parquet")
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
        kind = ("jsonl" if suffix in (".jsonl", ".ndjson") or start == b"{" else
                "json" if start == b"[" else "csv")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
        elif kind == "json":
            frame = _json_list(path, head)
        elif kind == "jsonl":
            frame = _jsonl(path)
        else:
            frame = _csv(path)
    except TraceError:
        raise
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: empty file") from None
    except OSError as err:
        raise TraceError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (pd.errors.ParserError, ValueError, ImportError) as err:
        if kind == "jsonl" and suffix not in (".jsonl", ".ndjson"):
            raise TraceError(f"{path}: a JSON object, not a list of records or one record a "
                             f"line (JSONL): {str(err).splitlines()[0]}") from None
        raise TraceError(f"{path}: cannot be read as {kind}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                         ) from None
    if frame.empty:
        raise TraceError(f"{path}: no rows")
    # Where a row sits in the file: after a header line (CSV), on its own line (JSONL), or
    # by its number (a JSON list's records, Parquet's rows).
    frame.attrs["first_line"] = {"csv": 2, "jsonl": 1}.get(kind)
    frame.attrs["unit"] = {"json": "record", "parquet": "row"}.get(kind, "line")
    if len(frame.columns) == 1 and kind == "csv":
        raise TraceError(f"{path}: one column ({frame.columns[0]!r}): is the delimiter not "
                         f"a comma?")
    return frame


def _csv(path: Path):
    """A CSV file as a table. Its first column is never taken as an index (pandas does so
    where the first row has a field more than the header: every column shifted); a row with
    more fields than the header is a TraceError naming its line."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(path, skipinitialspace=True, encoding="utf-8-sig", index_col=False)
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in said):
        import csv

        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f)
            width = len(next(rows))
            line = next((rows.line_num for row in rows if len(row) > width and any(
                cell.strip() for cell in row[width:])), None)
        where = f"line {line}" if line else "a row"
        raise TraceError(f"{path}: {where}: more fields than the header's {width} columns (a "
                         f"comma too many, or a column without a name)")
    return frame


def _json_list(path: Path, head: bytes):
    """A JSON list of records as a table (nested records flattened: "usage.prompt_tokens")."""
    import pandas as pd

    first = _first_record(head)
    if isinstance(first, dict) and any(k in first for k in CONVERSATION_KEYS):
        raise TraceError(f"{path}: a JSON list of conversations, as ShareGPT's: "
                         f"{SHAREGPT_HINT}")
    try:
        records = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise TraceError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise TraceError(f"{path}: line {err.lineno}, column {err.colno}: not valid JSON "
                         f"({err.msg})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        shown = _json_type(next((r for r in records if not isinstance(r, dict)), records))
        raise TraceError(f"{path}: a JSON list holding {shown}: expected records, one "
                         f"object a request ({{\"input_tokens\": ..., \"output_tokens\": ...}})")
    return pd.json_normalize(records) if records else pd.DataFrame()


def _jsonl(path: Path):
    """One JSON record a line as a table, each value as the file wrote it (JSON's true stays a
    bool, a time stays text, a number past int64 a Python int); nested records flattened."""
    import pandas as pd

    # dtype=False leaves dates alone in pandas 3; pandas 2 needs convert_dates=False too (an
    # "arrival_time" of seconds would be read as milliseconds since 1970).
    dates = {} if int(pd.__version__.split(".")[0]) >= 3 else {"convert_dates": False}
    try:
        return _flat(pd.read_json(path, lines=True, dtype=False, **dates))
    except Exception:  # pandas fails in its own ways (a number past int64, a list a line):
        pass  # read it again below, to say why and where
    records, lines = [], []
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TraceError(f"{path}: line {n}: not a JSON record ({err.msg}, column "
                                 f"{err.colno})") from None
            if not isinstance(record, dict):
                raise TraceError(f"{path}: line {n}: {_json_type(record)}, not a "
                                 f"record ({{\"input_tokens\": ..., \"output_tokens\": ...}})")
            records.append(record)
            lines.append(n - 1)  # a row's index + 1 is its line (blank lines skipped)
    return pd.json_normalize(records).set_axis(lines) if records else pd.DataFrame()


def _json_type(value) -> str:
    """What a JSON value is, in JSON's words: "a number", "a list"."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _first_record(head: bytes):
    """The first element of the JSON list `head` begins, or None where it is cut."""
    text = head.decode("utf-8-sig", errors="replace")
    start = text.find("[") + 1
    try:
        return json.JSONDecoder().raw_decode(text[start:].lstrip())[0]
    except json.JSONDecodeError:
        return None


def _flat(frame):
    """A table whose cells hold JSON objects (an API's `usage`) with them as columns
    ("usage.prompt_tokens")."""
    import pandas as pd

    def holds_objects(column) -> bool:
        values = frame[column].dropna()
        return values.dtype == object and len(values) > 0 and isinstance(values.iloc[0], dict)

    nested = [c for c in frame.columns if holds_objects(c)]
    return pd.json_normalize(frame.to_dict("records")) if nested else frame
