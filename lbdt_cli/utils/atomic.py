"""Atomic outputs: write under a hidden temporary name, rename onto the final name on success.

Nothing half-written is ever left under the final name: on an exception (KeyboardInterrupt and
SIGTERM included, see `lbdt_cli.cli`) the temporary file or folder is deleted and the final path is
untouched.

A process killed outright (SIGKILL, power loss) cannot clean up, so every temporary name carries
its owner: `.<name>.tmp-<pid>-<start>-<host>-XXXX`, where <start> is the process start time in
clock ticks since boot (so a reused pid does not pass for the owner) and <host> a hash of the host
name. The first time a process writes into a folder it deletes the temporaries there whose owner
is gone; those of a live process, of another host (a shared file system), and names without an
owner are left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from lbdt_cli.errors import OutputError

__all__ = ["atomic_path", "atomic_dir", "check_writable_output", "remove_path", "remove_stale_temporaries"]

_OWNED = re.compile(r"^\..+\.(?:tmp|old)-(?P<pid>\d+)-(?P<start>\d+)-(?P<host>[0-9a-f]{8})-")
_swept: set[str] = set()
_swept_lock = threading.Lock()


def _process_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19])  # field 22 of proc(5)


def _host_hash() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def owner_tag(pid: int | None = None) -> str:
    """`<pid>-<start>-<host>-`: who owns a temporary name (start is 0 where /proc is missing)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_process_start(pid) or 0}-{_host_hash()}-"


def _owner_alive(pid: int, start: int, host: str) -> bool:
    if host != _host_hash():
        return True  # another machine's process: we cannot tell, so never touch it
    if os.path.isdir("/proc/self"):
        now = _process_start(pid)
        return now is not None and (start == 0 or now == 0 or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in `folder` whose owning process is gone; returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _OWNED.match(entry.name)
        if m and not _owner_alive(int(m["pid"]), int(m["start"]), m["host"]):
            remove_path(entry.path)
            removed.append(Path(entry.path))
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    remove_stale_temporaries(folder)


def _umask() -> int:
    try:  # read it without setting it: os.umask would change it for other threads for a moment
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    _sweep_once(parent)
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
    _try_write_in(ancestor, final)
    return final


_writable: set[str] = set()


def _try_write_in(folder: Path, wanted: Path) -> None:
    """Make and remove a folder in `folder`: os.access says yes to root on /sys, /proc and read-only mounts."""
    key = str(folder)
    if key in _writable:
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lbdt-write-test-", dir=folder))
    except OSError as exc:
        raise OutputError(f"cannot create output folder {wanted}: {exc.strerror or exc}") from None
    _writable.add(key)


def _temporary(make, final: Path, parent: Path, **kwargs):
    try:
        return make(dir=parent, **kwargs)
    except OSError as exc:
        raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from None


def _replace(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise OutputError(f"{final} exists already (use --overwrite to replace it)")
        if final.is_dir() and not final.is_symlink():
            # os.replace cannot put a folder over a non-empty folder: move the old one aside first
            # so the final name is never missing any longer than two renames.
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{owner_tag()}", dir=final.parent))
            os.rmdir(old)  # only the unique name is wanted
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
    fd, tmp_name = _temporary(tempfile.mkstemp, final, parent, prefix=f".{final.stem}.tmp-{owner_tag()}",
                              suffix=final.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
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
    tmp = Path(_temporary(tempfile.mkdtemp, final, parent, prefix=f".{final.name}.tmp-{owner_tag()}"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs follow the umask like files do
        yield tmp
        _replace(tmp, final, overwrite)
    except BaseException:
        remove_path(tmp)
        raise
