"""Refer-YouTube-VOS from the CodaLab 2021 release layout (layout and samples: docs/eval.md).

    ROOT/<split>/JPEGImages/<video>/<frame>.jpg
    ROOT/<split>/Annotations/<video>/<frame>.png     palette PNGs, value = object id, 0 = background
    ROOT/meta_expressions/<split>/meta_expressions.json
        {"videos": {vid: {"expressions": {exp_id: {"exp", "obj_id"}}, "frames": [names]}}}

Only splits with Annotations can be scored locally (`train`, or a held-out split laid out the same
way); `valid` is scored by the CodaLab server. A sample is one expression on one listed frame that has
an annotation PNG; the GT is `png == int(obj_id)`. J and F are averaged per expression over its frames.
Previous frame: number - 5 if that frame is listed, else the video's first frame.
"""

from __future__ import annotations

import json
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
    require_dir,
    require_file,
)
from lbdt_cli.errors import InputError

INTERVAL = 5  # frame names step by 5; LBDT: fid - 5 if it exists, else the first frame


def read_meta_expressions(path: Path) -> dict:
    require_file(path, "meta_expressions.json")
    try:
        videos = json.loads(path.read_text(encoding="utf-8"))["videos"]
        for vid, v in videos.items():
            v["expressions"], v["frames"]  # noqa: B018 - shape check
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: expected {{'videos': {{vid: {{'expressions': ..., 'frames': [...]}}}}}} ({exc!r})") from None
    return videos


class ReferYouTubeVOS(RvosDataset):
    name = "ytvos"
    davis_metrics = True
    default_interval = INTERVAL
    default_split = "train"
    # valid has no public masks: training holds out 5% of the train videos for validation
    train_split, val_split = "train", None
    # the zip the CodaLab server takes: Annotations/<video>/<expression id>/<frame>.png
    submission_layout = "Annotations/{video}/{expression}/{frame}.png"

    def __init__(self, root: str | os.PathLike, split: str = default_split, interval: int | None = None) -> None:
        super().__init__(root, split)
        self.interval = INTERVAL if interval is None else interval
        self.images_dir = require_dir(self.root / split / "JPEGImages", f"{split}/JPEGImages/<video>/<frame>.jpg")
        self.ann_dir = self.root / split / "Annotations"
        # valid (and test) have no public masks: every listed frame is predicted for the CodaLab server
        self.has_masks = self.ann_dir.is_dir()
        videos = read_meta_expressions(self.root / "meta_expressions" / split / "meta_expressions.json")
        test_meta = self.root / "meta_expressions" / "test" / "meta_expressions.json"
        if split == "valid" and test_meta.is_file():
            # the competition's valid file lists the test videos too; the valid server wants only the others
            for vid in read_meta_expressions(test_meta):
                videos.pop(vid, None)
        self.num_expressions = 0
        self.annotated_frames = 0
        self.videos = sorted(videos)
        for vid in self.videos:
            v = videos[vid]
            frames = sorted(v["frames"])
            vdir = self.ann_dir / vid
            annotated = [f for f in frames if (vdir / f"{f}.png").is_file()] if self.has_masks else frames
            if not annotated:
                raise InputError(f"missing {vdir}/<frame>.png: video {vid} has no annotation PNGs")
            self.annotated_frames += len(annotated)
            prev = previous_frames(annotated, self.interval, frames)
            for exp_id in sorted(v["expressions"], key=lambda e: (len(e), e)):
                e = v["expressions"][exp_id]
                self.num_expressions += 1
                for f in annotated:
                    self.samples.append(Sample(
                        sample_id=f"{vid}/{exp_id}/{f}",
                        video_id=vid,
                        frame=f,
                        prev_frame=prev[f],
                        expression=str(e["exp"]).strip(),
                        object_id=str(e.get("obj_id", "")),  # valid lists no object ids
                        expression_id=str(exp_id),
                        dataset=self,
                    ))

    def load_frames(self, video_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        return frames_from_folder(self.images_dir / video_id, names, (".jpg", ".jpeg", ".png"))

    def load_gt(self, sample: Sample) -> tuple[np.ndarray, None]:
        if not self.has_masks:
            raise InputError(f"missing folder {self.ann_dir}: split {self.split!r} has no annotations to score "
                             "against (Ref-YouTube-VOS valid is scored by the CodaLab server: use --submission)")
        png = self.cached_annotation(
            sample.video_id, sample.frame,
            lambda: read_index_png(self.ann_dir / sample.video_id / f"{sample.frame}.png"))
        return png == int(sample.object_id), None

    def check(self) -> CheckReport:
        return CheckReport("ytvos", str(self.root), self.split, len(self.videos), self.num_expressions,
                           self.annotated_frames, len(self.samples))


def check(root: str | os.PathLike, split: str = "train") -> CheckReport:
    return ReferYouTubeVOS(root, split).check()
