"""The `lbdt` command: a Typer app whose verbs live in `lbdt_cli.commands`."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from lbdt_cli import __version__
from lbdt_cli.commands import benchmark, make_shapes, segment, train
from lbdt_cli.commands import eval as eval_command
from lbdt_cli.errors import LbdtError

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
