"""A sweep spec's file and the shapes of its fields: the YAML read (a text file, not an SQLite
store, an image or UTF-16), where each field is in it, and checks of lists, whole numbers and
seconds within bounds. Every error names the file, the field, its line and what was expected.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from infergy.workloads.reading import FileProblem, read_text

MAX_BATCH = 1 << 20  # more prompts than any card holds: a larger batch is a typing slip
MAX_REPEATS = 1000
MAX_SEED = 2**32 - 1  # what every seeded library takes
MAX_WAIT_S = 3600.0  # idle power and cooldowns: an hour at most
MAX_WATTS = 10_000.0


class SpecError(ValueError):
    """A spec that cannot be run; the message names the file, field and what was expected."""


class FieldLines:
    """Line numbers of the YAML's fields, by path ("engines[1]", "cooldown.max_s")."""

    def __init__(self, text: str):
        import yaml

        self.lines: dict[str, int] = {}
        self.repeated: list[tuple[str, int, int]] = []  # a key given twice: path, lines
        with contextlib.suppress(yaml.YAMLError, RecursionError):
            self._walk(yaml.compose(text), "")

    def _walk(self, node, path: str) -> None:
        import yaml

        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                if sub in self.lines:  # YAML keeps the last silently
                    self.repeated.append((sub, self.lines[sub], key.start_mark.line + 1))
                    continue
                self.lines[sub] = key.start_mark.line + 1
                self._walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for n, item in enumerate(node.value):
                sub = f"{path}[{n}]"
                self.lines[sub] = item.start_mark.line + 1
                self._walk(item, sub)

    def at(self, path: str) -> str:
        """" (line L)" of the field at `path` (a key YAML reads as true: "True"), or ""."""
        line = self.lines.get(path) or self.lines.get(path.lower())
        return f" (line {line})" if line else ""


def read_spec_file(path: Path, presets: list[str]) -> tuple[Any, FieldLines]:
    """A spec file's YAML data and its fields' lines. SpecError naming the file where it is
    none (the `presets` are named), cannot be read, is not YAML text, or is not valid YAML."""
    import yaml

    try:
        text = read_text(path, "YAML text file", limit=1 << 20)
    except FileProblem as err:
        also = f", and not a preset (presets: {', '.join(presets)})" \
            if str(err) == "no such file" else ""
        raise SpecError(f"{path}: {err}{also}") from None
    try:
        data, lines = yaml.safe_load(text), FieldLines(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(f"{path}: {where}not valid YAML ({err.problem or err.context})"
                        ) from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    except RecursionError:
        raise SpecError(f"{path}: not a spec (YAML nested too deeply)") from None
    if lines.repeated:
        field, first, again = lines.repeated[0]
        raise SpecError(f"{path}: line {again}: field {field!r} given again (first at line "
                        f"{first}); give it once")
    return data, lines


def shown(value, width: int = 60) -> str:
    """A value as a message shows it: its repr, cut to `width` characters."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def as_list(value, key: str, fail, mappings: bool = False) -> list:
    """`value` as a non-empty list (a single value: a list of one; a mapping only where
    `mappings`: an engine or a grid)."""
    if isinstance(value, dict) and not mappings:
        raise fail(key, f"expected a list, got a mapping ({shown(value)})")
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise fail(key, "expected a non-empty list")
    return value


def is_int(value, low: int = 1, high: int | None = None) -> bool:
    """Whether `value` is an integer (not a bool) from `low` to `high`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (
        high is None or value <= high)


def whole(value, path: str, fail, low: int, high: int) -> int:
    """An integer field from `low` to `high`."""
    if not is_int(value, low, high):
        raise fail(path, f"expected an integer from {low} to {high:,}, got {shown(value)}")
    return value


def seconds(value, path: str, fail, high: float = MAX_WAIT_S, unit: str = "seconds") -> float:
    """A number field from 0 to `high` (not inf, not NaN), as a float."""
    if not (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value <= high):
        raise fail(path, f"expected {unit} from 0 to {high:g}, got {shown(value)}")
    return float(value)


def lengths(value, path: str, fail) -> list[int]:
    """A list of token counts (each a positive integer)."""
    values = as_list(value, path, fail)
    for n, v in enumerate(values):
        if not is_int(v):
            raise fail(f"{path}[{n}]", f"expected a positive number of tokens, got {shown(v)}")
    return values


def grids(data: dict, preset: dict, fail, presets: list[str]
          ) -> list[tuple[list[int], list[int]]]:
    """The spec's (input, output) grids: its `grids`, its input_tokens / output_tokens (the
    preset's where one is left out), or the preset's."""
    if "grids" in data:
        if "input_tokens" in data or "output_tokens" in data:
            raise fail("grids", "give either grids or input_tokens/output_tokens, not both")
        found = []
        for n, grid in enumerate(as_list(data["grids"], "grids", fail, mappings=True)):
            if not isinstance(grid, dict) or set(grid) != {"input_tokens", "output_tokens"}:
                raise fail(f"grids[{n}]", "expected {input_tokens: [...], output_tokens: [...]}")
            found.append((lengths(grid["input_tokens"], f"grids[{n}].input_tokens", fail),
                          lengths(grid["output_tokens"], f"grids[{n}].output_tokens", fail)))
        return found
    if "input_tokens" in data or "output_tokens" in data:
        base = preset.get("grids", [{}])
        if len(base) > 1 and not {"input_tokens", "output_tokens"} <= set(data):
            raise fail("input_tokens", "this preset has several grids: give both "
                                       "input_tokens and output_tokens, or grids")
        inputs = data.get("input_tokens", base[0].get("input_tokens"))
        outputs = data.get("output_tokens", base[0].get("output_tokens"))
        if inputs is None or outputs is None:
            missing = "output_tokens" if outputs is None else "input_tokens"
            raise fail(missing, "missing: give input_tokens and output_tokens, or a preset")
        return [(lengths(inputs, "input_tokens", fail), lengths(outputs, "output_tokens", fail))]
    if "grids" in preset:
        return [(list(g["input_tokens"]), list(g["output_tokens"])) for g in preset["grids"]]
    raise fail("input_tokens", "missing: give input_tokens and output_tokens, grids, or a "
                               f"preset ({', '.join(presets)})")


def cooldown(value, fail) -> dict[str, float] | None:
    """The cooldown's settings (max_s, within_w; {} for the defaults), or None for none."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict) or not all(k in ("max_s", "within_w") for k in value):
        raise fail("cooldown", "expected true, false or {max_s: seconds, within_w: watts}")
    return {key: seconds(v, f"cooldown.{key}", fail) if key == "max_s" else
            seconds(v, f"cooldown.{key}", fail, MAX_WATTS, "watts") for key, v in value.items()}


SLURM_KEYS = ("partition", "account", "time", "options")


def slurm(value, fail) -> dict:
    """A spec's Slurm settings for `--launcher slurm`: partition, account and time as text,
    options a mapping of other sbatch options (qos: high) ({} where none)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(k in SLURM_KEYS for k in value):
        raise fail("slurm", f"expected a mapping of {', '.join(SLURM_KEYS)}, e.g. {{partition: "
                            f"gpu, time: '4:00:00', options: {{qos: high}}}}")
    out = {}
    for key, v in value.items():
        if key == "options":
            if not isinstance(v, dict) or not all(isinstance(o, str) and isinstance(
                    x, str | int | float) for o, x in v.items()):
                raise fail("slurm.options", "expected a mapping of sbatch options to values "
                                            "(qos: high, constraint: h100)")
            out[key] = {o: str(x) for o, x in v.items()}
        elif isinstance(v, str | int) and not isinstance(v, bool):
            out[key] = str(v)
        else:
            raise fail(f"slurm.{key}", f"expected text, got {shown(v)}")
    return out
