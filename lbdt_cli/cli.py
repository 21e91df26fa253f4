"""The `lbdt` command: a Typer app whose verbs live in `lbdt_cli.commands`."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import typer
from rich.console import Console

from lbdt_cli import __version__
from lbdt_cli.commands import benchmark, export, make_shapes, segment, train
from lbdt_cli.commands import eval as eval_command
from lbdt_cli.errors import LbdtError
from lbdt_cli.utils.terminal import markup_safe

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on click
    from click import exceptions as click_exceptions

err_console = Console(stderr=True)

app = typer.Typer(
    name="lbdt",
    help="Referring video object segmentation with LBDT: segment clips, evaluate, train, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lbdt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Find the object a sentence describes in a video and write its mask on every frame."""


# One verb per module of lbdt_cli.commands; each module's register(app) adds its verb.
segment.register(app)  # lbdt segment
eval_command.register(app)  # lbdt eval
train.register(app)  # lbdt train
benchmark.register(app)  # lbdt benchmark-flops
make_shapes.register(app)  # lbdt make-shapes
export.register(app)  # lbdt export


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C (every `finally` and cleanup runs)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_SIGNALS = ("SIGTERM", "SIGHUP")  # what timeout, docker stop, Slurm, systemd and a closed terminal send


def _on_signal(signum, _frame) -> None:
    for name in _SIGNALS:  # a second signal must not cut the cleanup short
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_as_exceptions():
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in _SIGNALS:
            if hasattr(signal, name):
                sig = getattr(signal, name)
                previous[sig] = signal.signal(sig, _on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {markup_safe(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning errors into one `error:` line and a documented exit code.

    Usage errors (unknown option or command, missing argument) exit 2; SIGTERM and SIGHUP are
    handled like Ctrl-C (temporaries removed) and exit 128 + the signal number (143 for SIGTERM).
    """
    from lbdt_cli.utils.memory import keep_freed_memory

    keep_freed_memory()  # batched forwards reuse freed feature maps instead of page-faulting them in
    from lbdt_cli.utils import startup

    startup.reset()  # one command per process; in-process callers (tests) start afresh
    with _signals_as_exceptions():
        try:
            code = app(args=argv, standalone_mode=False)
        except click_exceptions.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(2)
        except click_exceptions.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(exc.format_message().replace("\n", " ").rstrip(".") + hint, exc.exit_code)
        except click_exceptions.ClickException as exc:
            _fail(exc.format_message().replace("\n", " "), exc.exit_code)
        except typer.Abort:
            _fail("aborted", 1)
        except LbdtError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Terminated as exc:
            _fail(f"terminated by {signal.Signals(exc.signum).name}", 128 + exc.signum)
    if code == 130:  # typer turns a Ctrl-C inside a command into exit code 130
        _fail("interrupted", 130)
    if isinstance(code, int) and code:
        sys.exit(code)
