"""MeViS (motion expressions video segmentation, ICCV 2023) from its release layout.

    ROOT/<split>/JPEGImages/<video>/<frame>.jpg
    ROOT/<split>/meta_expressions.json    {"videos": {video: {"frames": [names], "expressions":
                                            {exp_id: {"exp": text, "obj_id": [..], "anno_id": [..]}}}}}
    ROOT/<split>/mask_dict.json           {anno_id: [COCO RLE or null, one per listed frame]}   (train, valid_u)

Splits: `train`, `valid_u` (masks public, scored here) and `valid` (no masks: scored by the benchmark's
server, see `--submission`). A sample is one expression on one listed frame, every frame of the video.
The GT of an expression is the union of the masks of all its annotation ids; an object absent from a frame
has a null entry there, and an expression with no object present is an empty mask. J and F follow the
benchmark's evaluation: per expression over its frames, then the mean over expressions (docs/eval.md).
Previous frame: `interval` listed frames back (1 by default), clamped to the first frame.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lbdt_cli.data.common import CheckReport, RvosDataset, Sample, frames_from_folder, require_dir, require_file
from lbdt_cli.errors import InputError, LbdtError

SPLITS = ("train", "valid_u", "valid")
INTERVAL = 1  # listed frames back; our choice (the benchmark's models are clip-based)


def read_mevis_expressions(path: Path) -> dict:
    require_file(path, "meta_expressions.json")
    try:
        videos = json.loads(path.read_text(encoding="utf-8"))["videos"]
        for vid, v in videos.items():
            if not isinstance(v["frames"], list) or not v["frames"]:
                raise ValueError(f"video {vid} lists no frames")
            for exp_id, e in v["expressions"].items():
                str(e["exp"]), list(e.get("anno_id", []))  # noqa: B018 (type check)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: expected {{'videos': {{video: {{'frames': [...], 'expressions': {{id: "
                         f"{{'exp', 'obj_id', 'anno_id'}}}}}}}}}} ({exc!r})") from None
    return videos


def _rle_size(rle) -> tuple[int, int] | None:
    return (int(rle["size"][0]), int(rle["size"][1])) if rle else None


class MeViS(RvosDataset):
    name = "mevis"
    davis_metrics = True
    default_interval = INTERVAL
    default_split = "valid_u"
    train_split, val_split = "train", "valid_u"
    # the benchmark's evaluation reads prediction PNGs as grey and counts every non-zero pixel
    prediction_nonzero = True
    # the zip the benchmark's server takes: <video>/<expression id>/<frame>.png at the zip's root
    submission_layout = "{video}/{expression}/{frame}.png"
    gt_cache_size = 256

    def __init__(self, root: str | os.PathLike, split: str = default_split, interval: int | None = None) -> None:
        if split not in SPLITS:  # a bad flag (exit 2), checked before the files
            raise LbdtError(f"--split: MeViS split must be one of {', '.join(SPLITS)}, not {split!r}")
        super().__init__(root, split)
        self.interval = INTERVAL if interval is None else interval
        base = require_dir(self.root / split, f"the MeViS {split} folder ({split}/JPEGImages, meta_expressions.json)")
        self.images_dir = require_dir(base / "JPEGImages", f"{split}/JPEGImages/<video>/<frame>.jpg")
        videos = read_mevis_expressions(base / "meta_expressions.json")
        self.mask_path = base / "mask_dict.json"
        self.has_masks = self.mask_path.is_file()  # valid: scored by the server
        self._masks: dict | None = None
        self._frames: dict[str, list[str]] = {}
        self._anno: dict[tuple[str, str], list[str]] = {}
        self.videos = sorted(videos)
        self.num_expressions = 0
        for vid in self.videos:
            v = videos[vid]
            frames = [str(f) for f in v["frames"]]  # the listed order indexes mask_dict
            self._frames[vid] = frames
            for exp_id in sorted(v["expressions"], key=lambda e: (len(e), e)):
                e = v["expressions"][exp_id]
                self.num_expressions += 1
                self._anno[(vid, str(exp_id))] = [str(a) for a in e.get("anno_id", [])]
                objects = ",".join(str(o) for o in e.get("obj_id", []))
                for k, f in enumerate(frames):
                    self.samples.append(Sample(
                        sample_id=f"{vid}/{exp_id}/{f}",
                        video_id=vid,
                        frame=f,
                        prev_frame=frames[max(k - self.interval, 0)],
                        expression=" ".join(str(e["exp"]).split()),
                        object_id=objects,
                        expression_id=str(exp_id),
                        dataset=self,
                    ))
        self._position = {vid: {f: k for k, f in enumerate(fr)} for vid, fr in self._frames.items()}

    def mask_dict(self) -> dict:
        """mask_dict.json, read on first use (the train file is large)."""
        if self._masks is None:
            if not self.has_masks:
                raise InputError(f"missing {self.mask_path}: MeViS {self.split} has no public masks to score "
                                 "against (write a server submission with --submission FILE.zip)")
            try:
                self._masks = json.loads(self.mask_path.read_text(encoding="utf-8"))
                if not isinstance(self._masks, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise InputError(f"{self.mask_path}: expected {{anno_id: [RLE or null per frame]}} ({exc})") from None
        return self._masks

    def _rles(self, anno_id: str, video_id: str) -> list:
        try:
            rles = self.mask_dict()[anno_id]
        except KeyError:
            raise InputError(f"{self.mask_path}: no annotation id {anno_id} (named by video {video_id})") from None
        if len(rles) != len(self._frames[video_id]):
            raise InputError(f"{self.mask_path}: annotation {anno_id} has {len(rles)} frames, video {video_id} "
                             f"lists {len(self._frames[video_id])}")
        return rles

    def frame_size(self, video_id: str) -> tuple[int, int]:
        """(H, W) of a video: from any of its RLEs, else from its first frame's header (kept per video)."""
        sizes = self.__dict__.setdefault("_sizes", {})
        if video_id not in sizes:
            sizes[video_id] = self._find_size(video_id)
        return sizes[video_id]

    def _find_size(self, video_id: str) -> tuple[int, int]:
        for (vid, _), annos in self._anno.items():
            if vid == video_id:
                for a in annos:
                    size = next((_rle_size(r) for r in self._rles(a, vid) if r), None)
                    if size:
                        return size
        from PIL import Image

        first = self.images_dir / video_id / f"{self._frames[video_id][0]}.jpg"
        require_file(first, "a frame image")
        with Image.open(first) as im:
            return im.height, im.width

    def load_frames(self, video_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        return frames_from_folder(self.images_dir / video_id, names, (".jpg", ".jpeg", ".png"))

    def load_gt(self, sample: Sample) -> tuple[np.ndarray, None]:
        from pycocotools import mask as mask_utils

        k = self._position[sample.video_id][sample.frame]
        mask = None
        for a in self._anno[(sample.video_id, sample.expression_id)]:
            rle = self._rles(a, sample.video_id)[k]
            if not rle:
                continue  # the object is absent from this frame
            counts = rle["counts"]
            m = self.cached_annotation(a, sample.frame, lambda: mask_utils.decode(
                {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}) > 0)
            mask = m.copy() if mask is None else (mask | m)
        if mask is None:
            mask = np.zeros(self.frame_size(sample.video_id), bool)
        return mask, None

    def sample_group(self, sample: Sample) -> str:
        n = len(self._anno[(sample.video_id, sample.expression_id)])
        return "no target" if n == 0 else "one object" if n == 1 else "several objects"

    def check(self) -> CheckReport:
        notes = [] if self.has_masks else [f"no {self.mask_path.name}: {self.split} is scored by the server"]
        return CheckReport("mevis", str(self.root), self.split, len(self.videos), self.num_expressions,
                           sum(len(f) for f in self._frames.values()), len(self.samples), notes)
