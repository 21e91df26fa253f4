"""GloVe word vectors: the text format (`glove.840B.300d.txt`), parsed once into a memory-mapped
cache.

The text file has one word per line followed by D numbers, separated by single spaces. A few
840B words contain spaces themselves, so the vector is always the last D fields. Lines with
fewer than three fields (a "400000 300" header) are skipped; D is read from the first line that
has more. A line whose word is not UTF-8 or whose numbers do not parse is skipped (as torchtext
did); a line with fewer than D numbers is an error, except the last line of a file that does not
end with a newline (a cut-off download), which is skipped. A repeated word: the last row wins.

Parsing streams the file in large chunks through pyarrow's multi-threaded CSV reader, writing
rows straight to disk, so memory stays flat (the full 840B file: 2.2 M words, 2.6 GB of float32)
and both cores work. Chunks with anything unusual (words with spaces, a header, CR line ends,
numbers pyarrow does not take) go line by line through the plain rules above instead.

Cache: one folder per source file (named after its path, size and mtime), built under a temporary
name and renamed when complete:

    vectors.npy   float32 [N, D], rows in file order
    words.bin     the words' UTF-8 bytes back to back; offsets.npy (int64 [N+1]) bounds word i
    order.npy     int64 [N], rows sorted by word bytes (stable: equal words keep file order)
    meta.json     written last: source, N, D, each file's size and checksum

Opening the cache memory-maps these files and checks sizes and checksums (a partial or corrupt
cache is rebuilt); lookups binary-search `order`, so no word list is read into Python objects.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import queue
import struct
import sys
import tempfile
import threading
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lbdt_cli.errors import InputError, OutputError

CACHE_VERSION = 2
CHUNK_BYTES = 32 << 20  # text per parse step; memory use is a few of these
_NPY_HEADER = 128  # bytes reserved for vectors.npy's header, filled in when N is known
_SAMPLE_BLOCKS, _SAMPLE_SIZE = 64, 1 << 16  # vectors.npy is checked on these samples, not whole

Progress = Callable[[int, int], None]  # (bytes parsed, file size)


def default_cache_dir() -> Path:
    return Path(os.environ.get("LBDT_CACHE", Path.home() / ".cache" / "lbdt")) / "glove"


def cache_path(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder for a GloVe text file (it need not exist)."""
    path = Path(path)
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CACHE_VERSION}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / f"{path.stem}-{digest}"


class GloveVectors:
    """Word -> vector lookups over a cache folder (see the module docstring).

    Lookups are case-sensitive (the tokenizer lowercases queries), like torchtext.
    """

    def __init__(self, folder: str | os.PathLike, source: str = ""):
        folder = Path(folder)
        meta = _read_meta(folder)
        self.folder = folder
        self.source = source or meta["source"]
        self.vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        self.offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        self.order = np.load(folder / "order.npy", mmap_mode="r")
        self.dim = int(self.vectors.shape[1])
        self.skipped_lines = int(meta.get("skipped_lines", 0))
        self.truncated_last_line = bool(meta.get("truncated_last_line", False))
        self._blob = _map_bytes(folder / "words.bin")
        self._sorted = _SortedWords(self._blob, self.offsets, self.order)

    @classmethod
    def from_file(cls, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                  progress: Progress | None = None) -> "GloveVectors":
        """Open the cache of `path`, parsing the text file first if there is no valid cache.

        An unwritable cache folder only costs speed: the vectors then go to a temporary folder
        that is deleted once memory-mapped.
        """
        path = _check_source(path)
        folder = cache_path(path, cache_dir)
        if is_valid_cache(folder, path):
            return cls(folder, str(path))
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with _lock(folder):
                if not is_valid_cache(folder, path):  # another process may have built it meanwhile
                    build_cache(path, folder, progress)
                return cls(folder, str(path))
        except OutputError as exc:
            cause = exc
        except OSError as exc:
            cause = exc
        with tempfile.TemporaryDirectory(prefix="lbdt-glove-") as tmp:
            try:
                build_cache(path, Path(tmp) / "cache", progress)
            except OSError as exc:
                raise OutputError(f"cannot write the GloVe cache ({cause}; temporary folder: {exc}); "
                                  "set LBDT_CACHE to a folder with room for it") from None
            return cls(Path(tmp) / "cache", str(path))  # the maps outlive the deleted files

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def word(self, row: int) -> str:
        return bytes(self._blob[int(self.offsets[row]) : int(self.offsets[row + 1])]).decode("utf-8")

    def index(self, token: str) -> int | None:
        """The row of `token` (the last one if the file repeats it), or None."""
        key = token.encode("utf-8")
        i = bisect.bisect_right(self._sorted, key)
        if i and self._sorted[i - 1] == key:
            return int(self.order[i - 1])
        return None

    def __contains__(self, token: str) -> bool:
        return self.index(token) is not None

    def lookup(self, tokens: list[str]) -> np.ndarray:
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        for i, tok in enumerate(tokens):
            j = self.index(tok) if tok else None
            if j is not None:
                out[i] = self.vectors[j]
        return out


class _SortedWords:
    """The words in sorted order as a read-only sequence of bytes, for `bisect`."""

    def __init__(self, blob, offsets: np.ndarray, order: np.ndarray):
        self.blob, self.offsets, self.order = blob, offsets, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> bytes:
        r = int(self.order[i])
        return bytes(self.blob[int(self.offsets[r]) : int(self.offsets[r + 1])])


def _check_source(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"GloVe file not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"GloVe file is empty: {path}")
    return path


def _map_bytes(file: Path):
    if file.stat().st_size == 0:
        return b""
    with open(file, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One builder per cache folder at a time (torchrun ranks, two commands at once)."""
    with open(folder.with_name(f".{folder.name}.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- cache checks ------------------------------------------------------------------------------

_SMALL_FILES = ("words.bin", "offsets.npy", "order.npy")


def _file_crc(file: Path) -> int:
    with open(file, "rb") as fh:
        return zlib.crc32(fh.read())


def _sampled_crc(file: Path) -> int:
    """Checksum of evenly spaced blocks (the whole file would take seconds to read)."""
    size = file.stat().st_size
    crc = 0
    with open(file, "rb") as fh:
        for k in range(_SAMPLE_BLOCKS):
            fh.seek(size * k // _SAMPLE_BLOCKS)
            crc = zlib.crc32(fh.read(_SAMPLE_SIZE), crc)
        fh.seek(max(0, size - _SAMPLE_SIZE))
        crc = zlib.crc32(fh.read(), crc)
    return crc


def _read_meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text(encoding="utf-8"))


def is_valid_cache(folder: Path, source: Path | None = None) -> bool:
    """True if `folder` holds a complete cache whose files match what meta.json recorded."""
    try:
        meta = _read_meta(folder)
        if meta.get("version") != CACHE_VERSION:
            return False
        if source is not None and meta.get("source_size") != source.stat().st_size:
            return False
        for name, want in meta["files"].items():
            f = folder / name
            if f.stat().st_size != want["size"]:
                return False
            crc = _sampled_crc(f) if name == "vectors.npy" else _file_crc(f)
            if crc != want["crc32"]:
                return False
        n, dim = meta["rows"], meta["dim"]
        shapes = {"vectors.npy": (n, dim), "offsets.npy": (n + 1,), "order.npy": (n,)}
        return all(np.load(folder / name, mmap_mode="r").shape == shape for name, shape in shapes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


# --- parsing -----------------------------------------------------------------------------------


def build_cache(path: str | os.PathLike, folder: Path, progress: Progress | None = None) -> None:
    """Parse the GloVe text file `path` into the cache folder `folder` (replacing it)."""
    from lbdt_cli.utils.atomic import atomic_dir

    path = _check_source(path)
    # a build killed outright leaves an owner-tagged temporary folder; atomic_dir removes those
    # whose owner is gone
    with atomic_dir(folder, overwrite=True) as tmp:
        meta = _parse(path, tmp, progress)
        meta["files"] = {}
        for name in ("vectors.npy", *_SMALL_FILES):
            f = tmp / name
            crc = _sampled_crc(f) if name == "vectors.npy" else _file_crc(f)
            meta["files"][name] = {"size": f.stat().st_size, "crc32": crc}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _npy_header(rows: int, dim: int) -> bytes:
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, dim)
    body = _NPY_HEADER - 10
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body) + text.ljust(body - 1).encode("latin1") + b"\n"


def _find_dim(fh) -> int | None:
    """D from the first line with three or more fields (the plain rule, header lines skipped)."""
    for raw in fh:
        parts = raw.rstrip(b"\r\n").rstrip(b" ").split(b" ")
        if len(parts) >= 3:
            return len(parts) - 1
    return None


class _Reader:
    """Reads the file into a few reused buffers on a background thread (disk reads overlap
    parsing, and no fresh 32 MB buffer is faulted in per chunk)."""

    def __init__(self, fh, size: int, buffers: int):
        self.fh, self.size = fh, size
        self.free: queue.Queue = queue.Queue()
        for _ in range(buffers):
            self.free.put(bytearray(size))
        self.filled: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="glove-read")
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                buf = self.free.get()
                if buf is None:
                    return
                n = self.fh.readinto(buf)
                self.filled.put((buf, n))
                if not n:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.filled.put((exc, 0))

    def __iter__(self) -> Iterator[tuple[bytearray, int]]:
        while True:
            buf, n = self.filled.get()
            if isinstance(buf, BaseException):
                raise buf
            if not n:
                return
            yield buf, n

    def release(self, buf: bytearray) -> None:
        self.free.put(buf)

    def close(self) -> None:
        self.stop.set()
        self.free.put(None)
        self.thread.join()


def _parse(path: Path, out: Path, progress: Progress | None) -> dict:
    total = path.stat().st_size
    with open(path, "rb") as fh:
        dim = _find_dim(fh)
        fh.seek(0)
        if dim is None:
            raise InputError(f"GloVe file {path} holds no vectors (expected lines 'word v1 v2 ... vD')")
        chunker = _ChunkParser(path, dim)
        hook = sys.unraisablehook  # pyarrow reports a left-out row that is not UTF-8 this way; we see it anyway
        sys.unraisablehook = lambda u: None if isinstance(u.exc_value, UnicodeDecodeError) else hook(u)
        try:
            rows, offsets = _parse_chunks(fh, chunker, out, total, progress)
        finally:
            sys.unraisablehook = hook
    if rows == 0:
        raise InputError(f"GloVe file {path} holds no vectors (expected lines 'word v1 v2 ... vD')")
    offsets_all = np.cumsum(np.concatenate(offsets))
    np.save(out / "offsets.npy", offsets_all)
    np.save(out / "order.npy", _sort_order(out / "words.bin", offsets_all))
    return {"version": CACHE_VERSION, "source": str(path), "source_size": total, "rows": rows, "dim": dim,
            "skipped_lines": chunker.skipped, "truncated_last_line": chunker.truncated_last_line,
            "chunks": {"total": chunker.chunks, "with_rows_put_back": chunker.spliced,
                       "line_by_line": chunker.line_by_line}}


def _parse_chunks(fh, chunker: "_ChunkParser", out: Path, total: int, progress: Progress | None) -> tuple:
    """Chunks of whole lines go to two parsing threads (pyarrow releases the GIL); their rows
    are written in file order as they finish."""
    from concurrent.futures import ThreadPoolExecutor

    offsets = [np.zeros(1, np.int64)]
    rows = done = 0
    reader = _Reader(fh, CHUNK_BYTES, buffers=4)
    pending: collections.deque = collections.deque()  # (future, buf, start, end, buffer to release)
    with open(out / "vectors.npy", "wb") as vf, open(out / "words.bin", "wb") as wf, \
            ThreadPoolExecutor(2, thread_name_prefix="glove-parse") as pool:  # fmt: skip

        def finish_one() -> None:
            nonlocal rows
            future, buf, start, end, release = pending.popleft()
            rows = _write_rows(vf, wf, offsets, chunker.finish(future.result(), buf, start, end), rows)
            if release is not None:
                reader.release(release)

        try:
            vf.write(b"\0" * _NPY_HEADER)
            tail = b""
            for buf, n in reader:
                done += n
                first = buf.find(b"\n", 0, n)
                if first < 0:
                    tail += bytes(buf[:n])
                    reader.release(buf)
                    continue
                start = 0
                if tail:  # the line that straddles two chunks
                    piece = tail + bytes(buf[: first + 1])
                    pending.append((pool.submit(chunker.read, piece, 0, len(piece)), piece, 0, len(piece), None))
                    start = first + 1
                cut = buf.rfind(b"\n", 0, n) + 1
                tail = bytes(buf[cut:n])
                pending.append((pool.submit(chunker.read, buf, start, cut), buf, start, cut, buf))
                while len(pending) > 2:
                    finish_one()
                if progress is not None:
                    progress(done, total)
            while pending:
                finish_one()
            if tail:  # no newline at the end of the file
                rows = _write_rows(vf, wf, offsets, chunker.parse_last(tail), rows)
            vf.seek(0)
            vf.write(_npy_header(rows, chunker.dim))
        finally:
            reader.close()
    return rows, offsets


def _write_rows(vf, wf, offsets: list, pieces: list, rows: int) -> int:
    """Append parsed pieces: vectors to vectors.npy, word bytes to words.bin, lengths to offsets."""
    import pyarrow as pa

    for words, vectors in pieces:
        if len(words) == 0:
            continue
        words = words.cast(pa.large_binary())
        bufs = words.buffers()
        offs = np.frombuffer(bufs[1], dtype=np.int64)[words.offset : words.offset + len(words) + 1]
        start, end = int(offs[0]), int(offs[-1])
        if end > start:
            wf.write(memoryview(bufs[2])[start:end])
        offsets.append(np.diff(offs))
        vf.write(np.ascontiguousarray(vectors, dtype=np.float32).data)
        rows += len(words)
    return rows


def _sort_order(words_file: Path, offsets: np.ndarray) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    blob = words_file.read_bytes()
    arr = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(offsets) - 1,
                                           [None, pa.py_buffer(offsets), pa.py_buffer(blob)])  # fmt: skip
    return pc.sort_indices(arr).to_numpy().astype(np.int64)  # Arrow's sort is stable


class _ChunkParser:
    """Parses chunks of whole lines into (pyarrow binary words, float32 [n, D]) pieces in file order.

    A chunk goes through pyarrow whole; rows with another number of fields than D + 1 (words with
    spaces, headers) are left out by pyarrow and parsed by the plain rules, then put back in their
    place. A chunk pyarrow cannot take at all (a number it does not read, CR line ends) goes line
    by line.
    """

    def __init__(self, path: Path, dim: int):
        import pyarrow as pa
        import pyarrow.csv as pcsv

        self.path, self.dim = path, dim
        self.byte_pos = 0  # file offset of the current chunk
        self.chunks = self.spliced = self.line_by_line = 0  # how chunks went (reported in meta.json)
        self.skipped = 0
        self.truncated_last_line = False
        names = ["word"] + [f"v{i}" for i in range(dim)]
        self._read_options = lambda: pcsv.ReadOptions(column_names=names, use_threads=False, block_size=8 << 20)
        self._parse_options = lambda handler: pcsv.ParseOptions(
            delimiter=" ", quote_char=False, escape_char=False, double_quote=False, newlines_in_values=False,
            ignore_empty_lines=True, invalid_row_handler=handler)  # fmt: skip
        self._convert = pcsv.ConvertOptions(
            column_types={"word": pa.binary(), **{n: pa.float32() for n in names[1:]}},
            null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False, check_utf8=False)

    def read(self, buf, start: int, end: int):
        """pyarrow's pass over buf[start:end] (on a parsing thread): see `_read`; None if the
        chunk has CR line ends (pyarrow would split lines there)."""
        import pyarrow as pa

        if buf.find(b"\r", start, end) >= 0:
            return None
        return self._read(pa.py_buffer(buf).slice(start, end - start))

    def finish(self, got, buf, start: int, end: int) -> list:
        """Pieces for the whole lines buf[start:end] in file order, from `read`'s result."""
        pieces = None
        if got is not None:
            table, bad_rows = got
            if table is not None and not bad_rows:
                pieces = [self._utf8_only(self._arrays(table))]
            elif table is not None:
                pieces = self._splice(buf, start, end, table, bad_rows)
        if pieces is None:
            pieces = self._careful(bytes(buf[start:end]), last=False)
            self.line_by_line += 1
        self.chunks += 1
        self.byte_pos += end - start
        return pieces

    def parse_last(self, tail: bytes) -> list:
        """The last line of a file that does not end with a newline."""
        pieces = self._careful(tail, last=True)
        self.byte_pos += len(tail)
        return pieces

    def _read(self, data) -> tuple:
        """(table of the rows with D + 1 fields, the text of the rows left out); (None, _) on failure."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        bad: list[str] = []

        def handler(row) -> str:
            bad.append(row.text)
            return "skip"

        try:
            table = pcsv.read_csv(pa.BufferReader(data), read_options=self._read_options(),
                                  parse_options=self._parse_options(handler), convert_options=self._convert)  # fmt: skip
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None, bad
        return table, bad

    def _arrays(self, table) -> tuple:
        words = table.column(0).combine_chunks()
        vectors = np.empty((table.num_rows, self.dim), dtype=np.float32)
        r = 0
        for batch in table.to_batches():  # one per pyarrow block; columns to rows, a block at a time
            cols = [batch.column(j + 1).to_numpy(zero_copy_only=True) for j in range(self.dim)]
            vectors[r : r + batch.num_rows] = np.stack(cols).T
            r += batch.num_rows
        return words, vectors

    def _utf8_only(self, piece: tuple) -> tuple:
        import pyarrow as pa

        words, vectors = piece
        try:
            words.cast(pa.string())  # validates UTF-8
            return piece
        except pa.ArrowInvalid:
            keep = np.array([_is_utf8(w) for w in words.to_pylist()], dtype=bool)
            self.skipped += int((~keep).sum())
            return words.filter(pa.array(keep)), vectors[keep]

    def _splice(self, buf, start: int, end: int, table, bad_rows: list[str]) -> list | None:
        """Put the lines pyarrow left out (parsed by the plain rules) back between its rows.

        They are found by their text among the lines of the same length; their place among
        pyarrow's rows is their line number less the empty and left-out lines before them. None if
        anything does not add up.
        """
        arr = np.frombuffer(buf, np.uint8, end - start, start)
        ends = np.flatnonzero(arr == 10)
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts
        wanted = Counter(t.encode("utf-8") for t in bad_rows)
        found: Counter = Counter()
        lines = []
        for k in np.flatnonzero(np.isin(lengths, [len(t) for t in wanted])):
            text = bytes(arr[starts[k] : ends[k]])
            if text in wanted:
                found[text] += 1
                lines.append((int(k), text))
        if found != wanted:
            return None
        empty_before = np.cumsum(lengths == 0)
        words = vectors = None
        pieces, row = [], 0
        for i, (k, text) in enumerate(lines):
            r = k - i - int(empty_before[k])  # pyarrow's rows before this line
            if r < row or r > table.num_rows:
                return None
            if r > row:
                if words is None:
                    words, vectors = self._arrays(table)
                pieces.append(self._utf8_only((words.slice(row, r - row), vectors[row:r])))
                row = r
            pieces.append(self._plain([text], k, last=False))
        if row < table.num_rows:
            if words is None:
                words, vectors = self._arrays(table)
            pieces.append(self._utf8_only((words.slice(row), vectors[row:])))
        self.spliced += 1
        return pieces

    def _careful(self, buf: bytes, last: bool) -> list:
        """Line by line: runs of ordinary lines through pyarrow, the rest by the plain rules."""
        import pyarrow as pa

        lines = buf.split(b"\n")
        if not last:
            lines.pop()  # buf ends with a newline
        pieces, run, run_start = [], [], 0

        def flush_run() -> None:
            if run:
                table, bad = self._read(pa.py_buffer(b"\n".join(run) + b"\n"))
                pieces.append(self._utf8_only(self._arrays(table)) if table is not None and not bad
                              else self._plain(run, run_start, last=False))  # fmt: skip
                run.clear()

        for k, line in enumerate(lines):
            ordinary = line.count(b" ") == self.dim and b"\r" not in line and not (last and k == len(lines) - 1)
            if ordinary:
                if not run:
                    run_start = k
                run.append(line)
            else:
                flush_run()
                pieces.append(self._plain([line], k, last=last and k == len(lines) - 1))
        flush_run()
        return pieces

    def _lines_before(self) -> int:
        """Lines before the current chunk (counted only for an error message)."""
        count, left = 0, self.byte_pos
        with open(self.path, "rb") as fh:
            while left > 0:
                data = fh.read(min(left, CHUNK_BYTES))
                if not data:
                    break
                count += data.count(b"\n")
                left -= len(data)
        return count

    def _plain(self, lines: list[bytes], first: int, last: bool) -> tuple:
        """The plain rules (module docstring), one line at a time."""
        import pyarrow as pa

        words, rows = [], []
        for k, raw in enumerate(lines):
            parts = raw.rstrip(b"\r\n").rstrip(b" ").split(b" ")
            if len(parts) < 3:
                continue
            if len(parts) < self.dim + 1:
                if last:
                    self.truncated_last_line = True
                    continue
                line = self._lines_before() + first + k + 1
                raise InputError(f"GloVe file {self.path} line {line}: expected a word and {self.dim} numbers, "
                                 f"found {len(parts) - 1} fields after the word")  # fmt: skip
            word = b" ".join(parts[: len(parts) - self.dim])
            try:
                word.decode("utf-8")
                row = np.asarray(parts[len(parts) - self.dim :], dtype=np.float32)
            except (UnicodeDecodeError, ValueError):
                self.skipped += 1
                continue
            words.append(word)
            rows.append(row)
        vectors = np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
        return pa.array(words, pa.binary()), vectors


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
