"""`lbdt make-shapes`: write Moving Shapes Sentences clips (mp4 + masks + expressions.json)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from lbdt_cli.errors import LbdtError

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("make-shapes")
    def make_shapes(
        out_dir: Path = typer.Argument(..., help="Folder to create (written atomically)."),
        clips: int = typer.Option(4, "--clips", "-n", help="Number of clips."),
        seed: int = typer.Option(
            2_000_000, "--seed", help="Seed of the first clip (clip i uses seed+i). The default is the start "
            "of the held-out test split; training uses seeds 0.. and validation 1000000.."),
        size: int = typer.Option(128, "--size", help="Frame width and height in pixels."),
        frames: int = typer.Option(24, "--frames", help="Frames per clip (12 fps)."),
        codec: str = typer.Option("lossless", "--codec",
                                  help="lossless (x264 RGB, exact frames) or compatible (yuv420p, plays anywhere)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it exists."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the output folder."),
    ) -> None:
        """Generate Moving Shapes Sentences clips: <clip>.mp4, <clip>/masks/<frame>.png, expressions.json."""
        from lbdt_cli.data.shapes_generator import write_shapes

        if clips < 1:
            raise LbdtError("--clips must be at least 1")
        if size < 32:
            raise LbdtError("--size must be at least 32")
        if frames < 1:
            raise LbdtError("--frames must be at least 1")
        if codec not in ("lossless", "compatible"):
            raise LbdtError(f"unknown --codec {codec!r} (lossless or compatible)")
        if seed < 0:
            raise LbdtError("--seed must be >= 0")

        with console.status(f"writing {clips} clip(s)...", spinner="dots") if not quiet else _Null():
            index = write_shapes(out_dir, clips, seed=seed, size=size, frames=frames, overwrite=overwrite,
                                 codec=codec)
        if quiet:
            console.print(str(out_dir))
            return
        console.print(f"[bold]{clips} clip(s)[/], {size}x{size}, {frames} frames @ {index['fps']} fps", highlight=False)
        for cid, entry in index["clips"].items():
            console.print(f"[cyan]{out_dir / entry['video']}[/]  masks: {out_dir / entry['masks']}",
                          highlight=False, soft_wrap=True)
            for j, e in enumerate(entry["expressions"]):
                tag = "  [yellow](needs motion)[/]" if e["needs_motion"] else ""
                console.print(f"    {j}  \"{e['text']}\"  [dim]{e['kind']}, object {e['object']}[/]{tag}",
                              highlight=False, soft_wrap=True)
        console.print(f"[green]wrote[/] {out_dir}/  (videos: <clip>.mp4, masks: <clip>/masks/<frame>.png with "
                      f"value = object index + 1, index: {out_dir / 'expressions.json'})", highlight=False)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
