"""What every evaluation dataset reader shares: the sample type, the check report, small file readers.

A reader (`a2d`, `jhmdb`, `ytvos`, `davis`, `shapes_reader`; listed in `lbdt_cli.data.READERS`) turns a dataset folder in its original
release layout into a list of `Sample`s. A sample is one referring expression on one annotated frame;
it knows its previous frame (for the frame difference) and can load its frames and its GT mask.
Every missing or malformed file raises one `InputError` naming the file and what was expected.
"""

from __future__ import annotations

import csv
import io
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Callable, Sequence

import numpy as np

from lbdt_cli.errors import InputError


@dataclass(frozen=True)
class Sample:
    """One expression on one annotated frame.

    `frame` / `prev_frame` are frame names as in the dataset's file names ("00025"); `object_id` is the
    GT key (A2D instance id, YTVOS/DAVIS object id); `expression_id` names the expression within its
    video (used for `--save-masks DIR/<video>/<expression_id>/<frame>.png`).
    """

    sample_id: str
    video_id: str
    frame: str
    prev_frame: str
    expression: str
    object_id: str
    expression_id: str
    dataset: "RvosDataset" = field(repr=False, compare=False)

    def load_gt(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(GT mask bool H×W, void mask bool H×W or None)."""
        return self.dataset.load_gt(self)

    def load_frame(self, name: str | None = None) -> np.ndarray:
        """A frame of this sample's video (default: its own frame) as uint8 H×W×3."""
        name = self.frame if name is None else name
        return self.dataset.load_frames(self.video_id, [name])[name]


@dataclass
class CheckReport:
    """What `--check` found in a dataset folder."""

    dataset: str
    root: str
    split: str
    videos: int
    expressions: int
    annotated_frames: int
    samples: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class RvosDataset:
    """Base class of the readers. Subclasses fill `samples` and implement the two loaders."""

    name = "base"
    # the dataset's facts, read by `lbdt eval` / `lbdt train` through the registry (lbdt_cli.data.READERS)
    default_split = ""
    # training: the split to learn from, and the split to validate on (None: hold out 5% of the videos)
    train_split: str | None = None
    val_split: str | None = None
    needs_root = True
    # the paper's numbers (model config -> metric key -> percent), printed beside ours
    paper: dict[str, dict[str, float]] = {}
    # False for splits whose masks are not public (scored by the benchmark's server)
    has_masks = True
    # the server's zip entry of one mask ("{video}", "{expression}", "{frame}"); None: no server
    submission_layout: str | None = None
    # prediction PNGs: any non-zero grey is foreground (MeViS's evaluation) instead of >= 128
    prediction_nonzero = False
    # J-HMDB has one sentence per video: masks go to DIR/<video>/<frame>.png
    one_expression_per_video = False
    # DAVIS J/F (per object over frames) apply where objects are followed over many frames
    davis_metrics = False
    # the protocol's frame-name step between a frame and its previous frame (dataset default)
    default_interval = 1
    # per-frame annotations kept in memory: samples come expression by expression over a video's frames,
    # so this should cover the annotated frames of one video (DAVIS ~100, Ref-YTVOS <= 36, A2D ~5)
    gt_cache_size = 128

    def __init__(self, root: str | os.PathLike, split: str) -> None:
        self.root = Path(root)
        self.split = split
        self.samples: list[Sample] = []
        if not self.root.is_dir():
            raise InputError(f"dataset folder {self.root} does not exist")

    def __len__(self) -> int:
        return len(self.samples)

    def load_frames(self, video_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_gt(self, sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def check(self) -> CheckReport:
        raise NotImplementedError

    def cached_annotation(self, video_id: str, frame: str, load: Callable[[], Any]) -> Any:
        """`load()` for the annotation of (video, frame), read once and kept in a small LRU cache.

        A frame's annotation file holds every object of the frame, and each expression on that frame is
        its own sample: the readers decode the file once and pick the object out of the cached value.
        """
        cache: OrderedDict | None = getattr(self, "_gt_cache", None)
        if cache is None:  # subclasses that do not call RvosDataset.__init__ (shapes)
            cache = self._gt_cache = OrderedDict()
        key = (video_id, frame)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = load()
        cache[key] = value
        while len(cache) > max(self.gt_cache_size, 1):
            cache.popitem(last=False)
        return value

    def sample_group(self, sample: Sample) -> str | None:
        """A subset name to report separately (shapes: "appearance" / "motion"), or None."""
        return None

    def report_groups(self, sample: Sample) -> dict[str, str]:
        """Breakdowns for `--report` ({grouping: group}); by default the `sample_group` subset, if any."""
        group = self.sample_group(sample)
        return {"subset": group} if group else {}

    def mask_relpath(self, sample: Sample) -> str:
        """Where `--save-masks` puts this sample's PNG, relative to the folder."""
        if self.one_expression_per_video:
            return f"{sample.video_id}/{sample.frame}.png"
        return f"{sample.video_id}/{sample.expression_id}/{sample.frame}.png"


# --------------------------------------------------------------------------- previous-frame rule


def previous_frame(frame: str, interval: int, available: Sequence[str] | None = None, first: int = 1,
                   members: AbstractSet[str] | None = None) -> str:
    """Previous frame name: number(frame) - interval, zero-padded like `frame`, clamped to the first frame.

    The first frame is `available[0]` when the video's sorted frame names are given, else number `first`.
    With `available`, a target that is not one of them also falls back to the first frame (the YTVOS rule
    "fid - 5 if it exists, else the first frame"). `members` is `set(available)` when the caller has it
    already (calling this for many frames of one video); without it the set is built here.
    """
    width = len(frame)
    if available:
        first_name = available[0]
        name = f"{max(int(frame) - interval, int(first_name)):0{width}d}"
        return name if name in (members if members is not None else set(available)) else first_name
    return f"{max(int(frame) - interval, first):0{width}d}"


def previous_frames(frames: Sequence[str], interval: int, available: Sequence[str]) -> dict[str, str]:
    """{frame: previous_frame(frame, interval, available)} for many frames of one video (one set built)."""
    members = frozenset(available)
    return {f: previous_frame(f, interval, available, members=members) for f in frames}


# --------------------------------------------------------------------------- small readers


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(f"missing {path}: expected {what}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"missing folder {path}: expected {what}")
    return path


def read_text(path: Path, encodings: Sequence[str] = ("utf-8",)) -> str:
    data = path.read_bytes()
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise InputError(f"{path}: cannot decode as {' or '.join(encodings)}")


def read_csv_rows(path: Path, header: Sequence[str] | None, min_cols: int, what: str) -> list[list[str]]:
    """Rows of a CSV file (real CSV quoting). With `header`, the first row must equal it (case-insensitive)."""
    text = read_text(path, ("utf-8", "latin-1"))
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV ({exc}); expected {what}") from None
    if header is not None:
        if not rows or [c.strip().lower() for c in rows[0][: len(header)]] != list(header):
            got = ",".join(rows[0]) if rows else "an empty file"
            raise InputError(f"{path}: expected header '{','.join(header)}', found '{got[:80]}'")
        rows = rows[1:]
    for n, r in enumerate(rows, start=2 if header else 1):
        if len(r) < min_cols:
            raise InputError(f"{path} line {n}: expected {what} ({min_cols} columns), found {len(r)}")
    return rows


def read_index_png(path: Path) -> np.ndarray:
    """A palette (or grey) PNG as its index values, uint8 H×W."""
    from PIL import Image

    require_file(path, "an annotation PNG")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1", "I", "I;16"):
                im = im.convert("L")
            return np.array(im).astype(np.uint8, copy=False)
    except OSError as exc:
        raise InputError(f"{path}: cannot read PNG ({exc})") from None


def read_rgb_image(path: Path) -> np.ndarray:
    """A frame image as uint8 RGB, decoded exactly as `lbdt segment` decodes frame folders (one
    decoder, so the same JPEG gives the same pixels in segment and eval)."""
    from lbdt_cli.video.reader import read_image

    require_file(path, "a frame image")
    return read_image(path)


def frames_from_video(path: Path, names: Sequence[str], to_index: Callable[[str], int]) -> dict[str, np.ndarray]:
    """Decode only the needed frames of a video file, in one pass (`to_index`: name -> 0-based index)."""
    from lbdt_cli.video.reader import iter_frames

    want = {to_index(n): n for n in names}
    if min(want) < 0:
        raise InputError(f"{path}: frame {want[min(want)]} has a negative index")
    out: dict[str, np.ndarray] = {}
    for fr in iter_frames(path, start=min(want), end=max(want) + 1):
        if fr.index in want:
            out[want[fr.index]] = fr.rgb
    missing = [want[i] for i in sorted(want) if want[i] not in out]
    if missing:
        raise InputError(f"{path}: has no frame {missing[0]} (decoded {len(out)} of the needed frames)")
    return out


def frames_from_folder(folder: Path, names: Sequence[str], suffixes: Sequence[str] = (".jpg", ".png", ".jpeg")) -> dict[str, np.ndarray]:
    out = {}
    for n in names:
        for s in suffixes:
            p = folder / f"{n}{s}"
            if p.is_file():
                out[n] = read_rgb_image(p)
                break
        else:
            raise InputError(f"missing {folder / (n + suffixes[0])}: expected frame {n} of the video")
    return out
