"""The GloVe first run, shown: parse the text file into its cache with a progress bar (by bytes)
before the model loads, so the minute it takes is not a silent spinner."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console


def prepare_glove(glove: str | os.PathLike | None, show: bool, console: Console) -> None:
    """Build the cache of `glove` if it has none (nothing to do when cached or not given).

    `show=False` (--quiet, --json, non-main ranks) parses without drawing anything. A missing
    file is left for the loader to report.
    """
    if glove is None or not Path(glove).is_file():
        return
    from lbdt_cli.glove import GloveVectors, cache_path, is_valid_cache

    path = Path(glove)
    if is_valid_cache(cache_path(path), path):
        return
    if not show:
        GloveVectors.from_file(path)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, \
        TransferSpeedColumn  # fmt: skip

    with Progress(TextColumn("[bold]GloVe first run[/]: parsing {task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console) as progress:  # fmt: skip
        task = progress.add_task(path.name, total=path.stat().st_size)
        GloveVectors.from_file(path, progress=lambda done, _total: progress.update(task, completed=done))
    console.print(f"GloVe vectors cached in {cache_path(path)} (later runs memory-map them)", highlight=False)
