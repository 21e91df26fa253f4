"""Tiny datasets in the exact original release layouts, written by the tests (no downloads)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

H, W = 24, 32  # frame size of every tiny dataset


def frame_rgb(k: int) -> np.ndarray:
    """Frame k is a flat colour that encodes k, so tests can check which frame was decoded."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 10 * k
    img[..., 1] = 100
    return img


def write_mp4(path: Path, num_frames: int) -> None:
    import imageio_ffmpeg

    frames = np.stack([frame_rgb(k) for k in range(num_frames)])
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{W}x{H}", "-r", "12", "-i", "-", "-c:v", "libx264rgb", "-qp", "0", "-pix_fmt", "rgb24", str(path)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)


def box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _write_h5(path: Path, instances: list[int], masks_hw: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["instance"] = np.asarray(instances, np.float64)
        rem = np.stack([m.T for m in masks_hw])  # MATLAB column-major: stored (N, W, H)
        f["reMask"] = rem[0] if len(masks_hw) == 1 else rem  # one instance: 2-D (W, H)
        f["reBBox"] = np.zeros((4, len(masks_hw)))
        f["id"] = np.full((1, len(masks_hw)), 11.0)


# A2D GT masks, by (video, frame, instance)
A2D_MASKS = {
    ("vidA", "00003", 0): box(2, 10, 2, 10),
    ("vidA", "00003", 1): box(12, 20, 5, 25),
    ("vidA", "00008", 1): box(0, 6, 0, 30),
    ("vidB", "00005", 0): box(5, 15, 10, 20),
}


def make_a2d(root: Path, with_clips: bool = True) -> Path:
    rel = root / "Release"
    rel.mkdir(parents=True)
    (rel / "videoset.csv").write_text(
        "vidA,11,0,1,320,426,10,2,1\n"
        "vidB,35,0,1,320,426,10,1,1\n"
        "vidC,11,0,1,320,426,10,1,0\n"
        "vidM,11,0,1,320,426,10,1,1\n"
    )
    (root / "a2d_annotation.txt").write_text(
        "video_id,instance_id,query\n"
        'vidA,0,"The man, jumping"\n'
        "vidA,1,the dog\n"
        "vidA,1 (copy),the dog again\n"
        "vidB,0,ball rolling\n"
        "vidC,0,a train sample\n"
        "vidM,0,missed video\n"
    )
    (root / "a2d_missed_videos.txt").write_text("vidM\n")
    inst = root / "a2d_annotation_with_instances"
    # instance list [0, 1, 1]: id 1 duplicated (data quirk), the first match is the referred mask
    _write_h5(inst / "vidA" / "00003.h5", [0, 1, 1],
              [A2D_MASKS["vidA", "00003", 0], A2D_MASKS["vidA", "00003", 1], box(0, 1, 0, 1)])
    _write_h5(inst / "vidA" / "00008.h5", [1], [A2D_MASKS["vidA", "00008", 1]])  # single instance: 2-D reMask
    _write_h5(inst / "vidB" / "00005.h5", [0], [A2D_MASKS["vidB", "00005", 0]])
    _write_h5(inst / "vidC" / "00002.h5", [0], [box(0, 5, 0, 5)])
    if with_clips:
        for v in ("vidA", "vidB", "vidC"):
            write_mp4(rel / "clips320H" / f"{v}.mp4", 10)
    return root


def make_jhmdb(root: Path) -> Path:
    (root / "jhmdb_annotation.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "jhmdb_annotation.txt").write_text("video_id,query\nvid1,the man brushing hair\nvid2,a girl waving\n")
    for cls, vid, n_png, t in (("brush_hair", "vid1", 10, 8), ("wave", "vid2", 4, 3)):
        d = root / "Rename_Images" / cls / vid
        d.mkdir(parents=True)
        for k in range(1, n_png + 1):
            Image.fromarray(frame_rgb(k)).save(d / f"{k:05d}.png")
        part = np.zeros((H, W, t), np.uint8)
        for f in range(t):
            part[f : f + 5, 2 * f : 2 * f + 6, f] = 1  # H×W×T, moves with the frame
        m = root / "puppet_mask" / cls / vid
        m.mkdir(parents=True)
        scipy.io.savemat(m / "puppet_mask.mat", {"part_mask": part})
    return root


def palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [255, 255, 255] * 253)
    im.save(path)


def ytvos_labels(k: int) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    lab[2:10, k : k + 8] = 1
    lab[14:22, 20:30] = 2
    return lab


def make_ytvos(root: Path) -> Path:
    frames = ["00000", "00005", "00010"]
    for k, f in enumerate(frames):
        d = root / "train" / "JPEGImages" / "v1"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame_rgb(k)).save(d / f"{f}.jpg", quality=100)
        palette_png(root / "train" / "Annotations" / "v1" / f"{f}.png", ytvos_labels(k))
    meta = {"videos": {"v1": {"expressions": {"0": {"exp": "a red car", "obj_id": "1"},
                                               "1": {"exp": "the green box", "obj_id": "2"}},
                               "frames": frames}}}
    p = root / "meta_expressions" / "train" / "meta_expressions.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps(meta))
    return root


def davis_labels(k: int) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    lab[4:12, 4 + k : 12 + k] = 1
    lab[4:12, 12 + k] = 255  # void border
    return lab


def make_davis(root: Path) -> Path:
    for vid in ("bear", "dogs-scale", "trainvid"):
        for k in range(3):
            d = root / "JPEGImages" / "480p" / vid
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame_rgb(k)).save(d / f"{k:05d}.jpg", quality=100)
            palette_png(root / "Annotations_unsupervised" / "480p" / vid / f"{k:05d}.png", davis_labels(k))
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("bear\ndogs-scale\n")
    (sets / "train.txt").write_text("trainvid\n")
    text = root / "davis_text_annotations"
    text.mkdir()
    (text / "Davis17_annot1.txt").write_text('bear 1 "a brown bear walking"\ntrainvid 1 "x"\n', encoding="utf-8")
    (text / "Davis17_annot2.txt").write_bytes('dog-scale 1 "the dog near the café"\n'.encode("latin-1"))
    return root


def rle(mask: np.ndarray) -> dict:
    """COCO RLE as MeViS stores it in mask_dict.json (counts as a string)."""
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


# MeViS objects by annotation id: one mask per listed frame, None where the object is absent
MEVIS_FRAMES = ["00000", "00001", "00002"]
MEVIS_OBJECTS = {
    "10": [box(2, 10, 2, 10), box(2, 10, 4, 12), None],  # leaves the scene in the last frame
    "11": [box(12, 20, 5, 25), box(12, 20, 6, 26), box(12, 20, 7, 27)],
}


def make_mevis(root: Path, split: str = "valid_u", with_masks: bool = True) -> Path:
    d = root / split
    for k, f in enumerate(MEVIS_FRAMES):
        (d / "JPEGImages" / "m1").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame_rgb(k)).save(d / "JPEGImages" / "m1" / f"{f}.jpg", quality=100)
    meta = {"videos": {"m1": {"frames": MEVIS_FRAMES, "expressions": {
        "0": {"exp": "the box  moving left", "obj_id": [0], "anno_id": [10]},
        "1": {"exp": "two boxes moving right", "obj_id": [0, 1], "anno_id": [10, 11]},
        "2": {"exp": "nothing flies away", "obj_id": [], "anno_id": []}}}}}
    (d / "meta_expressions.json").write_text(json.dumps(meta))
    if with_masks:
        masks = {a: [rle(m) if m is not None else None for m in ms] for a, ms in MEVIS_OBJECTS.items()}
        (d / "mask_dict.json").write_text(json.dumps(masks))
    return root
