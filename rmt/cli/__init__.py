"""The ``rmt`` command. Thin: each submodule parses its flags and calls into the rooms.

Each command module exposes ``register(app)``; heavy imports (torch, transformers, datasets) happen
inside the command functions so that ``rmt --help`` stays fast.

Errors: a user's mistake (``rmt.errors.UsageError``, a flag that does not parse, a file the user
named that is missing, exists already or may not be written) is one ``error: ...`` line, exit
status 2. Anything else is a bug and shows its traceback. ``rmt --debug`` or ``RMT_DEBUG=1`` shows
the traceback of user errors too.

Under ``torchrun`` or ``accelerate launch`` every process runs the same command and meets the same
user error: only rank 0 (``RANK``, else ``LOCAL_RANK``) prints it; the others exit with the same
status in silence, so the user reads the line once, not once per process. (The checks that raise
them read the flags and files before any per-process work, so every rank meets the same one;
``--debug`` / ``RMT_DEBUG=1`` lets every rank print, with its rank, and its traceback.)
"""

import os
import sys
import traceback

import typer
import typer.core

# Typer (0.29) shows a type after every option, `<bool>` even for on/off flags that take no value.
# A flag's help says what it does; show no type for it.
_display_type = typer.core.TyperOption.display_type_rich


def _no_type_for_flags(self, ctx):
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _no_type_for_flags

from rmt.cli import demo, evaluate, generate, models, reproduce, train
from rmt.errors import UsageError

_debug = {"on": False}  # set by --debug for this call of main()

app = typer.Typer(
    name="rmt",
    context_settings={"max_content_width": 120},
    help="Recurrent Memory Transformer and the BABILong benchmark toolkit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of every error, user errors included "
                                                      "(also: RMT_DEBUG=1)."),
):
    """Recurrent Memory Transformer and the BABILong benchmark toolkit."""
    _debug["on"] = _debug["on"] or debug
    if version:
        from rmt import __version__

        print(__version__)
        raise typer.Exit()


for _module in (demo, generate, train, evaluate, reproduce, models):
    _module.register(app)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _click_exceptions():
    try:  # typer 0.2x vendors click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - typer versions that use click itself
        from click import exceptions
    return exceptions


def launch_rank() -> int:
    """This process's rank under a launcher (``RANK`` as torchrun and accelerate set it, else
    ``LOCAL_RANK``); 0 when not launched or when the variable is not a number."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _say(line: str) -> None:
    """A user error's one line on stderr, printed by rank 0 only (see the module docstring)."""
    rank = launch_rank()
    if rank == 0:
        print(line, file=sys.stderr)
    elif debugging():
        print(f"[rank {rank}] {line}", file=sys.stderr)


def debugging() -> bool:
    """Whether tracebacks are wanted for user errors too (``--debug`` or ``RMT_DEBUG`` set, not 0)."""
    return _debug["on"] or os.environ.get("RMT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv=None):
    """Entry point: user errors become one clear line on stderr instead of a traceback, flag errors
    found while parsing (an unknown option, a value of the wrong type) included; any other
    exception is a bug and propagates with its traceback."""
    click = _click_exceptions()
    _debug["on"] = False
    try:
        code = app(args=argv, standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `rmt` alone: the help is already printed
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else "rmt"
        _say(f"error: {_one_line(exc.format_message())} (see: {where} --help)")
        sys.exit(2)
    except click.ClickException as exc:
        _say(f"error: {_one_line(exc.format_message())}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        _say("aborted")
        sys.exit(1)
    except UsageError as exc:  # the one channel of user mistakes; anything else is a bug (its traceback)
        if debugging():
            traceback.print_exc()
        _say(f"error: {_one_line(exc)}")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
