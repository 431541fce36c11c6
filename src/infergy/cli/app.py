"""The `infergy` application and what its verbs share: the consoles, number formatting, a
user's error printed without a traceback, and the entry point."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from infergy import __version__
from infergy.engines import ENGINES
from infergy.models import RenamedModelWarning
from infergy.plan import MAX_WAIT_S
from infergy.run import Quiet
from infergy.store import is_sqlite

app = typer.Typer(
    help="Measure and model the energy of large-language-model inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

class _Console(Console):
    """rich's console, which wraps lines and cuts table cells at the terminal's width only
    on a terminal. Output piped, to a file or to a CI log keeps every digit and every word
    on its line, whatever the width of the terminal it was started from (unless COLUMNS
    asks for a width)."""

    UNWRAPPED = 10_000

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or self._width is not None or os.environ.get("COLUMNS", "").isdigit():
            return size
        return ConsoleDimensions(self.UNWRAPPED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


out = _Console()
err = _Console(stderr=True)
MODEL_HELP = "A catalog model (infergy models), or a model's config.json (a file or its folder)."


def _version(value: bool) -> None:
    if value:
        out.print(f"infergy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    warnings.showwarning = _show_warning


_python_shows = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A note of infergy's own (a renamed model) as a line of the command's, not Python's."""
    if issubclass(category, RenamedModelWarning):
        err.print(f"infergy: note: {message}", markup=False, highlight=False)
    else:
        _python_shows(message, category, filename, lineno, file, line)


def gpu_list(text: str | None) -> list[str] | None:
    """--gpu's names (comma-separated); None for every card (no --gpu, or all)."""
    if text in (None, "all"):
        return None
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or "all" in gpus:
        raise fail(f"--gpu expects GPU names separated by commas, or all; got {text!r}")
    return gpus


def engine_list(text: str) -> list[str]:
    """--engine's names (comma-separated); an unknown one is said here, before the stores
    (they would say only that they hold no such points)."""
    engines = list(dict.fromkeys(e.strip() for e in text.split(",")))  # each once
    unknown = [e for e in engines if e not in ENGINES and ":" not in e]
    if unknown:
        raise fail(f"--engine: unknown engine {unknown[0]!r}; expected names of "
                   f"{', '.join(ENGINES)} (comma-separated), or module:Class")
    return engines


def idle_seconds(value: float) -> float:
    """--idle-s's check: seconds from 0 to a sweep spec's bound for its `idle_s`, an hour
    (`plan.MAX_WAIT_S`; NaN and infinity refused: `inf` waited for ever)."""
    if not 0 <= value <= MAX_WAIT_S:
        raise typer.BadParameter(f"expected seconds from 0 to {MAX_WAIT_S:g}, got {value:g}")
    return value


def fmt(value: float | None, unit: str, digits: int = 4) -> str:
    """`value unit` to `digits` significant digits, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}g} {unit}"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a user's error (no traceback) and give the Exit to raise. The message is
    printed as it is: brackets in it (a spec's `models: [...]`) are not markup."""
    err.print(f"[red]error[/]: {escape(message)}")
    return typer.Exit(code)


def output_file(path: Path, option: str) -> Path:
    """A file a command will write, checked before it does any work: not a folder, not an
    SQLite file (a results store is never written over), its folder made, writable. A
    user's error (exit 2) names `option` otherwise."""
    if path.is_dir():
        raise fail(f"{option} {path}: is a folder; give the name of a file to write")
    if path.exists() and not os.access(path, os.R_OK):
        raise fail(f"{option} {path}: cannot be read (permission denied)")
    if is_sqlite(path):
        raise fail(f"{option} {path}: is an SQLite file (a results store?), which infergy "
                   f"never writes over; give another name")
    writable_folder(path.parent, option, path)
    return path


def output_folder(path: Path, option: str) -> Path:
    """A folder a command will write into, made (with its parents) and checked before any
    work; a user's error naming `option` where it is a file or cannot be written."""
    if path.exists() and not path.is_dir():
        raise fail(f"{option} {path}: is a file; give a folder to write into")
    writable_folder(path, option, path)
    return path


def writable_folder(folder: Path, option: str, path: Path) -> None:
    """`folder`, where `option`'s `path` goes, made (with its parents) and writable; a user's
    error naming them otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"{option} {path}: folder {folder} cannot be made ({e.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK) or (path.is_file()
                                                     and not os.access(path, os.W_OK)):
        raise fail(f"{option} {path}: cannot be written (permission denied)")


def note(text: str, style: str = "dim") -> None:
    """A line of the library's (what cannot be measured, a warning) on stderr, in `style`."""
    err.print(f"[{style}]infergy: {escape(text)}[/]")


def status(speaks: bool, text: str):
    """A status line on stderr, or nothing for a process that does not speak (a TP rank
    other than 0). Its `update(text)` changes the line."""
    return err.status(text) if speaks else Quiet()


class LogsToStderr:
    """For a command whose standard output is JSON alone (`--json`): while it is on, file
    descriptor 1 (this process's standard output, and that of every process it starts)
    points to standard error, where the log lines that engines print to standard output
    (vLLM's, transformers') go instead. `status` is `status` that turns it on first, as the
    engine is about to load (a process that only launches ranks turns it never on: rank 0,
    which prints the JSON, writes to its standard output). Leaving the `with` turns it off.
    `active` False: it does nothing."""

    def __init__(self, active: bool = True):
        self.active = active
        self._saved: int | None = None

    def on(self) -> None:
        if self.active and self._saved is None:
            sys.stdout.flush()
            self._saved = os.dup(1)
            os.dup2(2, 1)

    def status(self, speaks: bool, text: str):
        self.on()
        return status(speaks, text)

    def __enter__(self) -> LogsToStderr:
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            sys.stdout.flush()  # what was printed meanwhile goes to stderr
            os.dup2(self._saved, 1)
            os.close(self._saved)
            self._saved = None


def argv(ctx: typer.Context) -> list[str] | None:
    """This command line as `main` was given it (for processes started to run it again, one
    a GPU); None where the app was called otherwise (a test's runner)."""
    return (ctx.find_root().obj or {}).get("argv")


def main(args: list[str] | None = None) -> None:
    """The `infergy` command on `args` (default: this process's arguments)."""
    args = sys.argv[1:] if args is None else list(args)
    app(args=args, prog_name="infergy", obj={"argv": args})
