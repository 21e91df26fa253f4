"""J-HMDB Sentences from the original release layout (layout and samples: docs/eval.md).

    ROOT/Rename_Images/<class>/<video>/<fid>.png           frames, %05d, 1-based
    ROOT/puppet_mask/<class>/<video>/puppet_mask.mat       MATLAB v5, key part_mask, H×W×T (row-major)
    ROOT/jhmdb_annotation.txt                              CSV with header video_id,query (928 rows)
(`jhmdb_annotation.txt` may also sit under ROOT/text_annotations/.)

Evaluated frames: 3 per video (2,784 samples on the full release), chosen deterministically among the
first T = min(#part_mask frames, #pngs) frames: fid = 1 + floor(k·T/4) for k = 1, 2, 3 (the quarter
points; all frames when T < 4). MTTR drew 3 random frames instead and froze them in
`jhmdb_sentences_samples_metadata.json`; if that file is in ROOT (or ROOT/text_annotations), its frames
are used, so numbers are comparable with MTTR / ReferFormer. One sentence per video, so there is no split.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from lbdt_cli.data.common import (
    CheckReport,
    RvosDataset,
    Sample,
    frames_from_folder,
    previous_frame,
    read_csv_rows,
    require_dir,
    require_file,
)
from lbdt_cli.errors import InputError

INTERVAL = 5  # LBDT's J-HMDB loader: fid - 5
MTTR_FRAMES_FILE = "jhmdb_sentences_samples_metadata.json"


def quarter_frames(num_frames: int) -> list[int]:
    """The 3 evaluated frame numbers (1-based) of a video with `num_frames` usable frames."""
    if num_frames < 4:
        return list(range(1, num_frames + 1))
    return sorted({1 + (k * num_frames) // 4 for k in (1, 2, 3)})


def _mat_frames(path: Path) -> int:
    """T of `part_mask` without loading the array."""
    import scipy.io

    try:
        info = {name: shape for name, shape, _ in scipy.io.whosmat(str(path))}
    except Exception as exc:  # scipy raises several types for non-.mat / v7.3 files
        raise InputError(f"{path}: not a MATLAB v5 file ({exc}); expected puppet_mask.mat with part_mask") from None
    if "part_mask" not in info:
        raise InputError(f"{path}: expected a 'part_mask' variable, found {sorted(info) or 'none'}")
    shape = info["part_mask"]
    if len(shape) != 3:
        raise InputError(f"{path}: part_mask has shape {shape}, expected H×W×T")
    return int(shape[2])


@lru_cache(maxsize=4)
def _load_part_mask(path: str) -> np.ndarray:
    import scipy.io

    try:
        return np.asarray(scipy.io.loadmat(path)["part_mask"])
    except Exception as exc:
        raise InputError(f"{path}: cannot read part_mask ({exc})") from None


class JHMDBSentences(RvosDataset):
    name = "jhmdb"
    one_expression_per_video = True
    default_interval = INTERVAL
    default_split = "all"
    # no train split: training holds out 5% of the videos for validation
    train_split, val_split = "all", None
    # paper Table 2 (models trained on A2D, no fine-tuning): AP / overall IoU / mean IoU
    paper = {"lbdt1": {"AP": 40.3, "overall_iou": 64.6, "mean_iou": 65.2},
             "lbdt4": {"AP": 41.1, "overall_iou": 64.5, "mean_iou": 65.8}}

    def __init__(self, root: str | os.PathLike, split: str = default_split, interval: int | None = None) -> None:
        super().__init__(root, split)
        self.interval = INTERVAL if interval is None else interval
        root = self.root
        self.images_dir = require_dir(root / "Rename_Images", "Rename_Images/<class>/<video>/<frame>.png")
        self.masks_dir = require_dir(root / "puppet_mask", "puppet_mask/<class>/<video>/puppet_mask.mat")
        txt = next((p for p in (root / "jhmdb_annotation.txt", root / "text_annotations" / "jhmdb_annotation.txt")
                    if p.is_file()), None)
        if txt is None:
            raise InputError(f"missing {root / 'jhmdb_annotation.txt'}: expected the J-HMDB Sentences text annotations")
        self.annotation_txt = txt
        self.class_of = {v.name: c.name for c in sorted(self.images_dir.iterdir()) if c.is_dir()
                         for v in sorted(c.iterdir()) if v.is_dir()}
        rows = read_csv_rows(txt, ("video_id", "query"), 2, "video_id,query")
        frames_json = next((p for p in (root / MTTR_FRAMES_FILE, root / "text_annotations" / MTTR_FRAMES_FILE)
                            if p.is_file()), None)
        fixed = self._read_mttr_frames(frames_json) if frames_json else None
        self.frame_rule = f"frames from {frames_json}" if fixed else "quarter points of the first T frames"
        self.videos = []
        self.annotated_frames = 0
        for vid, query in ((r[0].strip(), r[1]) for r in rows):
            if vid not in self.class_of:
                raise InputError(f"missing folder {self.images_dir}/<class>/{vid}: video of {txt.name} has no frames")
            self.videos.append(vid)
            pngs = self._frame_names(vid)
            n_mask = _mat_frames(self._mask_path(vid))
            self.annotated_frames += min(n_mask, len(pngs))
            fids = fixed.get(vid) if fixed else quarter_frames(min(n_mask, len(pngs)))
            if fids is None:
                raise InputError(f"{frames_json}: has no frames for video {vid}")
            width = len(pngs[0]) if pngs else 5
            for fid in fids:
                if fid > n_mask:
                    raise InputError(f"{self._mask_path(vid)}: part_mask has {n_mask} frames, frame {fid} is evaluated")
                name = f"{fid:0{width}d}"
                self.samples.append(Sample(
                    sample_id=f"v_{vid}_f_{name}",
                    video_id=vid,
                    frame=name,
                    prev_frame=previous_frame(name, self.interval, first=1),
                    expression=query.strip().lower(),
                    object_id="0",
                    expression_id="0",
                    dataset=self,
                ))

    @staticmethod
    def _read_mttr_frames(path: Path) -> dict[str, list[int]]:
        try:
            entries = json.loads(path.read_text())
            out: dict[str, list[int]] = {}
            for e in entries:
                out.setdefault(e[0], []).append(int(Path(e[1]).stem))
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise InputError(f"{path}: expected MTTR's list of [video_id, frame_path, mask_path, num_frames, query] ({exc})") from None
        return {k: sorted(v) for k, v in out.items()}

    def _video_dir(self, vid: str) -> Path:
        return self.images_dir / self.class_of[vid] / vid

    def _mask_path(self, vid: str) -> Path:
        return require_file(self.masks_dir / self.class_of[vid] / vid / "puppet_mask.mat", "the puppet mask (part_mask)")

    def _frame_names(self, vid: str) -> list[str]:
        names = sorted(p.stem for p in self._video_dir(vid).glob("*.png"))
        if not names:
            raise InputError(f"{self._video_dir(vid)}: expected frames <fid>.png, found none")
        return names

    def report_groups(self, sample: Sample) -> dict[str, str]:
        """The action class (the video's folder under Rename_Images)."""
        return {"action": self.class_of[sample.video_id]}

    def load_frames(self, video_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        return frames_from_folder(self._video_dir(video_id), names, (".png",))

    def load_gt(self, sample: Sample) -> tuple[np.ndarray, None]:
        part = _load_part_mask(str(self._mask_path(sample.video_id)))
        return part[:, :, int(sample.frame) - 1] > 0, None

    def check(self) -> CheckReport:
        return CheckReport("jhmdb", str(self.root), self.split, len(self.videos), len(self.videos),
                           self.annotated_frames, len(self.samples), [self.frame_rule])


def check(root: str | os.PathLike) -> CheckReport:
    return JHMDBSentences(root).check()
