"""Atomic outputs: write under a hidden temporary name, rename onto the final name on success.

Nothing half-written is ever left under the final name: on an exception (KeyboardInterrupt
included) the temporary file or folder is deleted and the final path is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from lbdt_cli.errors import OutputError

__all__ = ["atomic_path", "atomic_dir", "check_writable_output", "remove_path"]


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file, link or folder tree if it exists; never raises for a missing path."""
    p = Path(path)
    if p.is_symlink() or p.is_file():
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    elif p.is_dir():
        shutil.rmtree(p, ignore_errors=True)


def _parent_ready(final: Path) -> Path:
    parent = final.parent if str(final.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable")
    return parent


def check_writable_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail early (OutputError) if `path` exists without `overwrite`, or could not be created.

    Creates nothing: the nearest existing ancestor must be a writable folder (missing folders
    are made later, when the output is written).
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise OutputError(f"{final} exists already (use --overwrite to replace it)")
    if final.exists() and not os.access(final, os.W_OK):
        raise OutputError(f"{final} exists and is not writable")
    ancestor = final.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot create output folder {final.parent}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create output folder {final.parent}: {ancestor} is not writable")
    return final


def _replace(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise OutputError(f"{final} exists already (use --overwrite to replace it)")
        if final.is_dir() and not final.is_symlink():
            # os.replace cannot put a folder over a non-empty folder: move the old one aside first
            # so the final name is never missing any longer than two renames.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            remove_path(old)
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)
                raise
            remove_path(old)
            return
        if tmp.is_dir():
            remove_path(final)
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file path beside `final_path`; rename it onto `final_path` on success.

    The temporary name is hidden (`.name.tmp-XXXX<suffix>`, keeping the suffix so that tools
    choosing a format from the extension, like ffmpeg, still work). The file is not created:
    the caller writes it. On any exception it is removed and the exception propagates.
    """
    final = Path(final_path)
    parent = _parent_ready(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.tmp-", suffix=final.suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written for {final}")
        _replace(tmp, final, overwrite)
    except BaseException:
        remove_path(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final_dir: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final_dir`; rename it onto `final_dir` on success.

    With `overwrite`, an existing `final_dir` is replaced as a whole (not merged). On any
    exception the temporary folder and everything in it is removed.
    """
    final = Path(final_dir)
    parent = _parent_ready(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
    try:
        yield tmp
        _replace(tmp, final, overwrite)
    except BaseException:
        remove_path(tmp)
        raise
