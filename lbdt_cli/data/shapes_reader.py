"""Moving Shapes Sentences for `lbdt eval`: a folder written by `lbdt make-shapes`, or clips generated
in-process from their seeds (`lbdt_cli.data.shapes_generator` owns the generator and the folder format).

    ROOT/expressions.json              index (format lbdt-shapes-v1): clips, objects, expressions
    ROOT/<clip_id>.mp4                 the frames
    ROOT/<clip_id>/masks/<t:05d>.png   palette PNG per frame; expression e's mask is png == object + 1

Every frame of every clip is annotated: a sample is one expression on one frame (frame names are the
0-based %05d of the mask files). J and F are averaged per expression over its frames.
Previous frame: t - interval (the model's interval, 6 by default) clamped to frame 0.
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
    frames_from_video,
    previous_frame,
    read_index_png,
    require_file,
)
from lbdt_cli.errors import InputError, LbdtError

INTERVAL = 6


class ShapesEval(RvosDataset):
    name = "shapes"
    davis_metrics = True
    default_interval = INTERVAL
    default_split = "test"
    # training generates its clips (lbdt_cli.data.shapes_generator.ShapesDataset) from these splits' seeds
    train_split, val_split = "train", "val"
    needs_root = False

    def __init__(self, root: str | os.PathLike | None, split: str = default_split, interval: int | None = None,
                 num_clips: int = 20, size: int = 128, num_frames: int = 24, seed: int | None = None) -> None:
        from lbdt_cli.data import shapes_generator as shapes

        self.interval = INTERVAL if interval is None else interval
        self.root = Path(root) if root is not None else None
        self.split = split
        self.samples = []
        self._clips: dict[str, "shapes.ShapesClip"] = {}
        self._entries: dict[str, dict] = {}
        self._needs_motion: dict[tuple[str, str], bool] = {}
        if self.root is not None:
            if not self.root.is_dir():
                raise InputError(f"dataset folder {self.root} does not exist")
            index = shapes.read_index(self.root)
            num_frames = int(index["num_frames"])
            for cid, entry in index["clips"].items():
                require_file(self.root / entry["video"], f"the clip of {cid}")
                self._entries[cid] = {"video": entry["video"], "masks": entry["masks"]}
                self._add(cid, [(str(e["text"]), int(e["object"]), bool(e.get("needs_motion", False)))
                                for e in entry["expressions"]], num_frames)
            self.source = str(self.root)
        else:
            if split not in shapes.SPLIT_SEEDS:
                raise LbdtError(f"--split: unknown shapes split {split!r} (choose from {', '.join(shapes.SPLIT_SEEDS)})")
            first = shapes.SPLIT_SEEDS[split] if seed is None else seed
            for s in range(first, first + num_clips):
                clip = shapes.generate_clip(s, size=size, num_frames=num_frames)
                self._clips[clip.clip_id] = clip
                self._add(clip.clip_id, [(e.text, e.object, e.needs_motion) for e in clip.expressions], num_frames)
            self.source = f"generated: {num_clips} clips from seed {first}, {size}x{size}, {num_frames} frames"
        self.videos = sorted({s.video_id for s in self.samples})

    def _add(self, cid: str, exprs: list[tuple[str, int, bool]], num_frames: int) -> None:
        names = [f"{t:05d}" for t in range(num_frames)]
        for e, (text, obj, needs_motion) in enumerate(exprs):
            self._needs_motion[(cid, str(e))] = needs_motion
            for f in names:
                self.samples.append(Sample(
                    sample_id=f"{cid}/{e}/{f}",
                    video_id=cid,
                    frame=f,
                    prev_frame=previous_frame(f, self.interval, first=0),
                    expression=text,
                    object_id=str(obj),
                    expression_id=str(e),
                    dataset=self,
                ))

    def sample_group(self, sample: Sample) -> str:
        """Expressions that a same-colour, same-shape distractor makes need motion, and the rest."""
        from lbdt_cli.data.shapes_generator import expression_group

        return expression_group(self._needs_motion[(sample.video_id, sample.expression_id)])

    def load_frames(self, video_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        if video_id in self._clips:
            frames = self._clips[video_id].frames
            return {n: frames[int(n)] for n in names}
        return frames_from_video(self.root / self._entries[video_id]["video"], names, int)

    def load_gt(self, sample: Sample) -> tuple[np.ndarray, None]:
        obj = int(sample.object_id)
        if sample.video_id in self._clips:
            return self._clips[sample.video_id].objects[obj].masks[int(sample.frame)], None
        path = self.root / self._entries[sample.video_id]["masks"] / f"{sample.frame}.png"
        labels = self.cached_annotation(sample.video_id, sample.frame, lambda: read_index_png(path))
        return labels == obj + 1, None

    def check(self) -> CheckReport:
        exprs = len({(s.video_id, s.expression_id) for s in self.samples})
        frames = len({(s.video_id, s.frame) for s in self.samples})
        return CheckReport("shapes", self.source, self.split, len(self.videos), exprs, frames, len(self.samples))
