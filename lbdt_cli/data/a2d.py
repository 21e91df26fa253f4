"""A2D Sentences from the original release layout (layout and samples: docs/eval.md).

    ROOT/Release/videoset.csv                       no header; col 0 video id, col 8 split (0 train, 1 test)
    ROOT/Release/clips320H/<vid>.mp4                frames decoded with ffmpeg; annotation <fid> = frame fid-1
      or ROOT/Release/pngs320H/<vid>/<fid>.png|jpg  pre-extracted frames named %05d, 1-based (ffmpeg %05d)
    ROOT/a2d_annotation.txt                         CSV with header video_id,instance_id,query
    ROOT/a2d_missed_videos.txt                      (optional) videos without descriptions
    ROOT/a2d_annotation_with_instances/<vid>/<fid>.h5   HDF5: instance, reMask, reBBox, id
The three A2D Sentences files may also sit under ROOT/text_annotations/ (MTTR / ReferFormer layout).

Samples follow MTTR's `get_text_annotations`: for each text row of a video of the split (the
'1 (copy)' row dropped) and each annotated frame of that video in sorted order, a sample exists if the
row's instance id is in that frame's `instance` list. The GT is that instance's mask (the first index
whose id matches), at the original 320H size.
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
    frames_from_video,
    previous_frame,
    read_csv_rows,
    read_text,
    require_dir,
    require_file,
)
from lbdt_cli.errors import InputError, LbdtError

SPLITS = {"train": "0", "test": "1"}
# videoset.csv column 1: the video's actor-action label, actor = tens digit, action = units digit
ACTORS = {1: "adult", 2: "baby", 3: "ball", 4: "bird", 5: "car", 6: "cat", 7: "dog"}
ACTIONS = {1: "climbing", 2: "crawling", 3: "eating", 4: "flying", 5: "jumping", 6: "rolling", 7: "running",
           8: "walking", 9: "none"}
INTERVAL = 6  # LBDT's --interval for A2D
BAD_INSTANCE_IDS = {"1 (copy)"}


def _text_file(root: Path, name: str, what: str, required: bool = True) -> Path | None:
    for c in (root / name, root / "text_annotations" / name):
        if c.exists():
            return c
    if not required:
        return None
    raise InputError(f"missing {root / name}: expected {what} (also looked in {root / 'text_annotations'})")


def read_instances(path: Path) -> list[int]:
    """The instance ids of one `<fid>.h5` (flattened: the stored shape is 1-D or (N, 1))."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "instance" not in f:
                raise InputError(f"{path}: expected an 'instance' dataset (a2d_annotation_with_instances file)")
            ids = [int(v) for v in np.asarray(f["instance"]).reshape(-1)]
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc}); expected an A2D instance annotation") from None
    return ids


def read_instance_masks(path: Path) -> tuple[list[int], np.ndarray]:
    """(instance ids, reMask as N×W×H) of a `<fid>.h5`: the whole frame, read once for all its instances."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "instance" not in f or "reMask" not in f:
                raise InputError(f"{path}: expected 'instance' and 'reMask' datasets")
            ids = [int(v) for v in np.asarray(f["instance"]).reshape(-1)]
            masks = np.asarray(f["reMask"])
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc}); expected an A2D instance annotation") from None
    # one instance: reMask is (W, H) with no leading axis
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise InputError(f"{path}: reMask has shape {masks.shape}, expected (W, H) or (N, W, H)")
    return ids, masks


def pick_instance_mask(path: Path, ids: list[int], masks: np.ndarray, instance_id: int) -> np.ndarray:
    """The mask of `instance_id` among a frame's (ids, reMask): first matching index, transposed to H×W."""
    if instance_id not in ids:
        raise InputError(f"{path}: instance {instance_id} not in its instance list {ids}")
    k = ids.index(instance_id)
    if k >= masks.shape[0]:
        raise InputError(f"{path}: reMask holds {masks.shape[0]} masks, instance index {k} is out of range")
    return masks[k].T > 0  # MATLAB column-major -> H×W


def read_instance_mask(path: Path, instance_id: int) -> np.ndarray:
    """The mask of `instance_id` in a `<fid>.h5`: first matching index, `reMask` transposed to H×W."""
    ids, masks = read_instance_masks(path)
    return pick_instance_mask(path, ids, masks, instance_id)


class A2DSentences(RvosDataset):
    name = "a2d"
    default_interval = INTERVAL
    default_split = "test"
    train_split, val_split = "train", "test"
    # paper Table 1: AP / overall IoU / mean IoU
    paper = {"lbdt1": {"AP": 46.1, "overall_iou": 70.1, "mean_iou": 61.2},
             "lbdt4": {"AP": 47.2, "overall_iou": 70.4, "mean_iou": 62.1}}

    def __init__(self, root: str | os.PathLike, split: str = default_split, interval: int | None = None) -> None:
        if split not in SPLITS:  # a bad flag (exit 2), checked before the files
            raise LbdtError(f"--split: A2D Sentences split must be one of {', '.join(SPLITS)}, not {split!r}")
        super().__init__(root, split)
        self.interval = INTERVAL if interval is None else interval
        root = self.root
        release = root / "Release" if (root / "Release").is_dir() else root
        self.release = release
        videoset = require_file(release / "videoset.csv", "the A2D video list (9 columns, no header)")
        self.annotation_txt = _text_file(root, "a2d_annotation.txt", "the A2D Sentences text annotations")
        self.instances_dir = _text_file(root, "a2d_annotation_with_instances", "the per-frame instance HDF5 folder")
        require_dir(self.instances_dir, "a2d_annotation_with_instances/<video>/<frame>.h5")
        missed_path = _text_file(root, "a2d_missed_videos.txt", "", required=False)
        self.clips_dir = release / "clips320H"
        self.frames_dir = next((release / d for d in ("pngs320H", "frames") if (release / d).is_dir()), None)
        if not self.clips_dir.is_dir() and self.frames_dir is None:
            raise InputError(f"missing folder {self.clips_dir}: expected the A2D clips (<video>.mp4) "
                             f"or pre-extracted frames in {release / 'pngs320H'}/<video>/")

        vs_rows = read_csv_rows(videoset, None, 9, "video id ... split (9 columns)")
        split_of = {r[0].strip(): r[8].strip() for r in vs_rows}
        self.label_of = {r[0].strip(): r[1].strip() for r in vs_rows}
        missed = set()
        if missed_path is not None:
            missed = {ln.strip() for ln in read_text(missed_path, ("utf-8", "latin-1")).splitlines() if ln.strip()}
        self.videos = sorted(v for v, s in split_of.items() if s == SPLITS[split] and v not in missed)
        keep = set(self.videos)

        rows = read_csv_rows(self.annotation_txt, ("video_id", "instance_id", "query"), 3,
                             "video_id,instance_id,query")
        self.num_expressions = 0
        self.annotated_frames = 0
        frames_cache: dict[str, list[tuple[str, list[int]]]] = {}
        for row_idx, (vid, inst, query) in enumerate((r[0].strip(), r[1].strip(), r[2]) for r in rows):
            if vid not in keep or inst in BAD_INSTANCE_IDS:
                continue
            try:
                inst_id = int(inst)
            except ValueError:
                raise InputError(f"{self.annotation_txt} row {row_idx + 2}: instance_id {inst!r} is not an integer") from None
            if vid not in frames_cache:
                frames_cache[vid] = self._annotated_frames(vid)
                self.annotated_frames += len(frames_cache[vid])
            self.num_expressions += 1
            for fid, ids in frames_cache[vid]:
                if inst_id not in ids:
                    continue  # not evaluated for this expression (MTTR / CMPC-V)
                self.samples.append(Sample(
                    sample_id=f"v_{vid}_f_{fid}_i_{inst_id}_e_{row_idx}",
                    video_id=vid,
                    frame=fid,
                    prev_frame=previous_frame(fid, self.interval, first=1),
                    expression=query.strip().lower(),
                    object_id=str(inst_id),
                    expression_id=str(row_idx),
                    dataset=self,
                ))
        self.num_videos_with_text = len(frames_cache)

    def _annotated_frames(self, vid: str) -> list[tuple[str, list[int]]]:
        folder = self.instances_dir / vid
        require_dir(folder, f"the instance annotations of video {vid} (<frame>.h5)")
        out = []
        for p in sorted(folder.glob("*.h5")):
            out.append((p.stem, read_instances(p)))
        if not out:
            raise InputError(f"{folder}: expected annotated frames <frame>.h5, found none")
        return out

    def report_groups(self, sample: Sample) -> dict[str, str]:
        """Actor and action classes of the video (its label in videoset.csv)."""
        label = self.label_of.get(sample.video_id, "")
        if not label.isdigit():
            return {}
        code = int(label)
        return {"actor": ACTORS.get(code // 10, label), "action": ACTIONS.get(code % 10, label)}

    def load_frames(self, video_id: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        if self.clips_dir.is_dir() and (self.clips_dir / f"{video_id}.mp4").is_file():
            return frames_from_video(self.clips_dir / f"{video_id}.mp4", names, lambda n: int(n) - 1)
        if self.frames_dir is not None and (self.frames_dir / video_id).is_dir():
            return frames_from_folder(self.frames_dir / video_id, names, (".png", ".jpg", ".jpeg"))
        raise InputError(f"missing {self.clips_dir / (video_id + '.mp4')}: expected the clip of video {video_id}")

    def load_gt(self, sample: Sample) -> tuple[np.ndarray, None]:
        path = self.instances_dir / sample.video_id / f"{sample.frame}.h5"
        ids, masks = self.cached_annotation(
            sample.video_id, sample.frame,
            lambda: read_instance_masks(require_file(path, "an A2D instance annotation")))
        return pick_instance_mask(path, ids, masks, int(sample.object_id)), None

    def check(self) -> CheckReport:
        notes = [f"frames from {self.clips_dir if self.clips_dir.is_dir() else self.frames_dir}"]
        missing = [v for v in sorted({s.video_id for s in self.samples})
                   if not (self.clips_dir / f"{v}.mp4").is_file()
                   and not (self.frames_dir is not None and (self.frames_dir / v).is_dir())]
        if missing:
            notes.append(f"{len(missing)} videos without a clip, e.g. {missing[0]}")
        return CheckReport("a2d", str(self.root), self.split, self.num_videos_with_text, self.num_expressions,
                           self.annotated_frames, len(self.samples), notes)


def check(root: str | os.PathLike, split: str = "test") -> CheckReport:
    return A2DSentences(root, split).check()
