"""Ref-DAVIS17 from the DAVIS 2017 + davis_text_annotations release (layout and samples: docs/eval.md).

    ROOT/JPEGImages/480p/<video>/<frame>.jpg
    ROOT/Annotations_unsupervised/480p/<video>/<frame>.png   palette PNGs; value = object id, 255 = void
    ROOT/ImageSets/2017/{train,val}.txt                      video lists
    ROOT/Davis17_annot{1,2}[_full_video].txt                 `<video> <obj_id> "<expression>"`
(the text files may also sit under ROOT/davis_text_annotations/; annot2 files are latin-1.)

Every expression of every annotation file found (or only those named by `annotations`) is one track,
scored on every frame of its video against `png == obj_id` (void = 255 excluded from J and F). J and F
are averaged per track over frames, then over tracks, so with the four files the result is the average
of the four sets (they cover the same objects). This is the referring protocol with known object ids;
`--protocol unsupervised` (lbdt_cli.davis_unsupervised) scores the papers' way instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lbdt_cli.data.common import (
    CheckReport,
    RvosDataset,
    Sample,
    frames_from_folder,
    previous_frames,
    read_index_png,
    read_text,
    require_dir,
    require_file,
)
from lbdt_cli.errors import InputError

INTERVAL = 2  # LBDT's DAVIS loader: fid - 2 (here clamped to the first frame instead of fid + 2)
ANNOTATION_FILES = ("Davis17_annot1", "Davis17_annot1_full_video", "Davis17_annot2", "Davis17_annot2_full_video")
NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}


def read_davis_expressions(path: Path) -> list[tuple[str, str, str]]:
    """(video, obj_id, expression) rows of a Davis17_annot*.txt file (utf-8, else latin-1)."""
    rows = []
    for n, line in enumerate(read_text(path, ("utf-8", "latin-1")).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=2)
        if len(parts) < 3 or not parts[1].isdigit():
            raise InputError(f"{path} line {n}: expected '<video> <obj_id> \"<expression>\"', found {line.strip()[:60]!r}")
        vid, obj, expr = parts
        rows.append((NAME_FIXES.get(vid, vid), obj, expr.strip().strip('"').strip()))
    return rows


class RefDAVIS(RvosDataset):
    name = "davis"
    davis_metrics = True
    default_interval = INTERVAL
    default_split = "val"

    def __init__(self, root: str | os.PathLike, split: str = default_split, interval: int | None = None,
                 annotations: Sequence[str] | None = None, resolution: str = "480p") -> None:
        super().__init__(root, split)
        self.interval = INTERVAL if interval is None else interval
        root = self.root
        self.images_dir = require_dir(root / "JPEGImages" / resolution, f"JPEGImages/{resolution}/<video>/<frame>.jpg")
        self.ann_dir = require_dir(root / "Annotations_unsupervised" / resolution,
                                   f"Annotations_unsupervised/{resolution}/<video>/<frame>.png")
        split_file = require_file(root / "ImageSets" / "2017" / f"{split}.txt", f"the DAVIS 2017 {split} video list")
        split_videos = {ln.strip() for ln in read_text(split_file).splitlines() if ln.strip()}
        text_dirs = (root, root / "davis_text_annotations")
        wanted = tuple(annotations) if annotations else ANNOTATION_FILES
        self.annotation_files = [d / f"{a}.txt" for a in wanted for d in text_dirs if (d / f"{a}.txt").is_file()]
        if not self.annotation_files:
            raise InputError(f"missing {root / (wanted[0] + '.txt')}: expected Ref-DAVIS17 text annotations "
                             f"({', '.join(wanted)}.txt, also looked in {root / 'davis_text_annotations'})")
        self.num_expressions = 0
        self.annotated_frames = 0
        self._frames: dict[str, list[str]] = {}
        self._prev: dict[str, dict[str, str]] = {}
        for path in self.annotation_files:
            set_name = path.stem.replace("Davis17_", "")
            for k, (vid, obj, expr) in enumerate(read_davis_expressions(path)):
                if vid not in split_videos:
                    continue
                frames = self._frame_names(vid)
                prev = self._prev[vid]
                self.num_expressions += 1
                exp_id = f"{set_name}_{k}"
                for f in frames:
                    self.samples.append(Sample(
                        sample_id=f"{vid}/{exp_id}/{f}",
                        video_id=vid,
                        frame=f,
                        prev_frame=prev[f],
                        expression=expr,
                        object_id=obj,
                        expression_id=exp_id,
                        dataset=self,
                    ))
        self.videos = sorted(self._frames)
        self.annotated_frames = sum(len(v) for v in self._frames.values())

    def _frame_names(self, vid: str) -> list[str]:
        if vid not in self._frames:
            adir = require_dir(self.ann_dir / vid, f"the annotation PNGs of video {vid}")
            names = sorted(p.stem for p in adir.glob("*.png"))
            if not names:
                raise InputError(f"{adir}: expected annotation PNGs <frame>.png, found none")
            require_dir(self.images_dir / vid, f"the frames of video {vid}")
            self._frames[vid] = names
            self._prev[vid] = previous_frames(names, self.interval, names)
        return self._frames[vid]

    def annotation_set(self, sample: Sample) -> str:
        """The annotation file an expression comes from ("annot1", "annot1_full_video", ...)."""
        return sample.expression_id.rsplit("_", 1)[0]

    def frames_of(self, video_id: str) -> list[str]:
        return self._frames[video_id]

    def load_frames(self, video_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        return frames_from_folder(self.images_dir / video_id, names, (".jpg", ".jpeg", ".png"))

    def load_gt(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        png = self.cached_annotation(
            sample.video_id, sample.frame,
            lambda: read_index_png(self.ann_dir / sample.video_id / f"{sample.frame}.png"))
        return png == int(sample.object_id), png == 255

    def check(self) -> CheckReport:
        return CheckReport("davis", str(self.root), self.split, len(self.videos), self.num_expressions,
                           self.annotated_frames, len(self.samples),
                           [f"expressions from {', '.join(p.name for p in self.annotation_files)}"])


def check(root: str | os.PathLike, split: str = "val") -> CheckReport:
    return RefDAVIS(root, split).check()
