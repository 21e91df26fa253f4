"""The `lbdt` command: a Typer app whose verbs live in `lbdt_cli.commands`."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from lbdt_cli import __version__
from lbdt_cli.errors import LbdtError

# Each module in this list defines `register(app)`; a verb whose module is missing is skipped
# so that a partial checkout still runs the verbs it has.
COMMAND_MODULES = ("segment", "eval", "train", "benchmark", "make_shapes")

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


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"lbdt_cli.commands.{_name}")
    except ModuleNotFoundError as exc:  # only tolerate the verb module itself being absent
        if exc.name != f"lbdt_cli.commands.{_name}":
            raise
        continue
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning LbdtError into a one-line message and its exit code."""
    from lbdt_cli.utils.memory import keep_freed_memory

    keep_freed_memory()  # batched forwards reuse freed feature maps instead of page-faulting them in
    try:
        app(args=argv)  # standalone mode: usage errors print one line and exit 2
    except LbdtError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]error:[/] interrupted")
        sys.exit(130)
