"""Moving Shapes Sentences: a small referring video segmentation benchmark generated from a seed.

See docs/shapes.md. A clip is T frames of S x S RGB with 2-4 coloured shapes moving in straight lines over a
static smooth texture; each expression names exactly one object, by appearance, by motion, or both. Clips
are built so that many expressions NEED motion (a same-colour, same-shape twin that moves differently) and
some need colour (a same-shape, same-motion object of another colour).

On disk (`write_shapes`):
    OUT_DIR/expressions.json              index: clips, their objects and expressions (see `write_shapes`)
    OUT_DIR/<clip_id>.mp4                 H.264, 12 fps (lossless RGB by default)
    OUT_DIR/<clip_id>/masks/<t:05d>.png   palette PNG per frame: value k+1 = visible pixels of object k
                                          (visible masks never overlap, as in YouTube-VOS annotations)
The mask of expression e on frame t is `png == objects[e.object] + 1`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lbdt_cli.errors import InputError
from lbdt_cli.video.ffmpeg import decode_video, encode_video

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 40),
}
SHAPES = ("square", "circle", "triangle")
MOTIONS = ("left", "right", "up", "down", "still")
VOCABULARY = (
    "the", "a", "red", "green", "blue", "yellow", "square", "circle", "triangle", "moving", "left",
    "right", "up", "down", "still", "that", "is", "not", "and", "object", "shape",
)
FPS = 12
FORMAT = "lbdt-shapes-v1"
# Clip seeds: clip i of a split uses seed SPLIT_SEEDS[split] + i, so the splits never share a clip.
SPLIT_SEEDS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0), "still": (0.0, 0.0)}


@dataclass
class ShapeObject:
    colour: str
    shape: str
    size: float  # half-width in pixels
    motion: str
    speed: float  # pixels per frame (0 when still)
    start: tuple[float, float]  # centre (x, y) on frame 0
    masks: np.ndarray | None = field(default=None, repr=False)  # [T,S,S] bool, visible pixels

    def centre(self, t: int) -> tuple[float, float]:
        dx, dy = _DIRECTIONS[self.motion]
        return self.start[0] + dx * self.speed * t, self.start[1] + dy * self.speed * t

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("masks")
        d["start"] = [round(float(v), 3) for v in self.start]
        d["size"], d["speed"] = round(float(self.size), 3), round(float(self.speed), 3)
        return d


@dataclass(frozen=True)
class Expression:
    text: str
    object: int  # index into ShapesClip.objects
    kind: str  # "appearance" | "motion" | "both"
    needs_motion: bool  # the expression's appearance words alone match more than one object


def expression_group(needs_motion: bool) -> str:
    """The benchmark's split of expressions: "motion" when the colour and shape words alone match more
    than one object (a twin that moves differently), else "appearance"."""
    return "motion" if needs_motion else "appearance"


@dataclass
class ShapesClip:
    seed: int
    frames: np.ndarray  # [T,S,S,3] uint8
    objects: list[ShapeObject]
    expressions: list[Expression]
    num_frames: int = 0
    background: np.ndarray | None = field(default=None, repr=False)  # [S,S,3] uint8 (generated clips)
    draw_order: list[int] = field(default_factory=list)  # object indices, bottom to top

    @property
    def clip_id(self) -> str:
        return clip_id(self.seed)


def clip_id(seed: int) -> str:
    return f"shapes_{seed:07d}"


# ---------------------------------------------------------------------------------------------------------
# Rendering


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth low-frequency colour noise, muted so that the saturated object colours stay distinct."""
    import cv2

    base = rng.uniform(70, 170, size=3)
    coarse = rng.uniform(-45, 45, size=(4, 4, 3)).astype(np.float32)
    fine = rng.uniform(-15, 15, size=(9, 9, 3)).astype(np.float32)
    tex = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    tex += cv2.resize(fine, (size, size), interpolation=cv2.INTER_CUBIC)
    grey = tex.mean(axis=2, keepdims=True)
    tex = grey + 0.35 * (tex - grey)  # mostly luminance texture, a little colour
    return np.clip(base + tex, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, cx: float, cy: float, h: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if shape == "square":
        return (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= h * h
    # triangle pointing up: apex (cx, cy-h), base from (cx-h, cy+h) to (cx+h, cy+h)
    return (yy >= cy - h) & (yy <= cy + h) & (np.abs(xx - cx) <= (yy - cy + h) / 2)


def _full_masks(objects: list[ShapeObject], size: int, num_frames: int) -> np.ndarray:
    """[N,T,S,S] bool: each object's whole silhouette, ignoring occlusion."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((len(objects), num_frames, size, size), dtype=bool)
    for i, ob in enumerate(objects):
        for t in range(num_frames):
            cx, cy = ob.centre(t)
            out[i, t] = _shape_mask(ob.shape, cx, cy, ob.size, yy, xx)
    return out


def _sample_object(rng, size, num_frames, colour=None, shape=None, motion=None) -> ShapeObject:
    scale = size / 128.0
    h = float(rng.uniform(8, 16) * scale)
    motion = motion or MOTIONS[rng.integers(len(MOTIONS))]
    speed = 0.0
    if motion != "still":
        # keep the whole path inside the frame: travel <= size - 2h - 2
        max_speed = (size - 2 * h - 2) / max(num_frames - 1, 1)
        speed = float(min(rng.uniform(1.5, 4.0) * scale, max_speed))
    lo, hi = h, size - 1 - h
    travel = speed * (num_frames - 1)
    dx, dy = _DIRECTIONS[motion]
    x0 = rng.uniform(lo + max(-dx, 0) * travel, hi - max(dx, 0) * travel)
    y0 = rng.uniform(lo + max(-dy, 0) * travel, hi - max(dy, 0) * travel)
    return ShapeObject(
        colour=colour or list(COLOURS)[rng.integers(len(COLOURS))],
        shape=shape or SHAPES[rng.integers(len(SHAPES))],
        size=h, motion=motion, speed=speed, start=(float(x0), float(y0)),
    )


def _sample_layout(rng, size, num_frames, motion_twin_p, colour_twin_p) -> list[ShapeObject]:
    n = int(rng.integers(2, 5))
    objects: list[ShapeObject] = []
    if rng.random() < motion_twin_p:  # same colour and shape, different motion: motion is needed
        a = _sample_object(rng, size, num_frames)
        other = [m for m in MOTIONS if m != a.motion]
        objects += [a, _sample_object(rng, size, num_frames, a.colour, a.shape, other[rng.integers(len(other))])]
    if len(objects) <= 2 and rng.random() < colour_twin_p:  # same shape and motion, other colour
        a = _sample_object(rng, size, num_frames)
        other = [c for c in COLOURS if c != a.colour]
        objects += [a, _sample_object(rng, size, num_frames, other[rng.integers(len(other))], a.shape, a.motion)]
        n = max(n, len(objects))
    while len(objects) < n:
        objects.append(_sample_object(rng, size, num_frames))
    return objects


# ---------------------------------------------------------------------------------------------------------
# Expressions


def _templates(ob: ShapeObject) -> list[tuple[str, str, dict]]:
    """(text, kind, predicate) candidates describing `ob`; predicate keys: colour, shape, motion, moving."""
    c, s, m = ob.colour, ob.shape, ob.motion
    out = [
        (f"the {c} {s}", "appearance", {"colour": c, "shape": s}),
        (f"the {c} object", "appearance", {"colour": c}),
        (f"the {c} shape", "appearance", {"colour": c}),
        (f"the {s}", "appearance", {"shape": s}),
    ]
    if m == "still":
        out += [
            (f"the still {s}", "motion", {"shape": s, "motion": "still"}),
            (f"the {s} that is not moving", "motion", {"shape": s, "motion": "still"}),
            ("the still object", "motion", {"motion": "still"}),
            (f"the still {c} {s}", "both", {"colour": c, "shape": s, "motion": "still"}),
            (f"the {c} {s} that is not moving", "both", {"colour": c, "shape": s, "motion": "still"}),
            (f"the {c} {s} that is still", "both", {"colour": c, "shape": s, "motion": "still"}),
        ]
    else:
        out += [
            (f"the {s} moving {m}", "motion", {"shape": s, "motion": m}),
            (f"the shape moving {m}", "motion", {"motion": m}),
            (f"the object moving {m}", "motion", {"motion": m}),
            (f"the {s} that is moving {m}", "motion", {"shape": s, "motion": m}),
            (f"the {c} {s} moving {m}", "both", {"colour": c, "shape": s, "motion": m}),
            (f"the {c} {s} that is moving {m}", "both", {"colour": c, "shape": s, "motion": m}),
            (f"the moving {c} {s}", "both", {"colour": c, "shape": s, "moving": True}),
        ]
    return out


def _matches(ob: ShapeObject, pred: dict) -> bool:
    if "colour" in pred and ob.colour != pred["colour"]:
        return False
    if "shape" in pred and ob.shape != pred["shape"]:
        return False
    if "motion" in pred and ob.motion != pred["motion"]:
        return False
    if "moving" in pred and (ob.motion != "still") != pred["moving"]:
        return False
    return True


def resolve(objects: list[ShapeObject], pred: dict) -> list[int]:
    """Indices of the objects an expression's predicate matches."""
    return [i for i, ob in enumerate(objects) if _matches(ob, pred)]


def _expressions(rng, objects: list[ShapeObject], per_object: int) -> list[Expression]:
    out: list[Expression] = []
    for i, ob in enumerate(objects):
        unique = []
        for text, kind, pred in _templates(ob):
            if resolve(objects, pred) != [i]:
                continue
            appearance = {k: v for k, v in pred.items() if k in ("colour", "shape")}
            unique.append(Expression(text, i, kind, needs_motion=len(resolve(objects, appearance)) > 1))
        # prefer one expression per kind, so that each clip mixes appearance, motion and both
        by_kind: dict[str, list[Expression]] = {}
        for e in unique:
            by_kind.setdefault(e.kind, []).append(e)
        kinds = list(by_kind)
        rng.shuffle(kinds)
        for k in kinds[:per_object]:
            cands = by_kind[k]
            out.append(cands[int(rng.integers(len(cands)))])
    return out


# ---------------------------------------------------------------------------------------------------------
# Public generator


def generate_clip(
    seed: int,
    size: int = 128,
    num_frames: int = 24,
    *,
    motion_twin_p: float = 0.5,
    colour_twin_p: float = 0.3,
    expressions_per_object: int = 2,
    min_visible: float = 0.4,
    render: bool = True,
) -> ShapesClip:
    """Generate one clip, a pure function of its arguments (same seed -> identical bytes).

    `min_visible`: layouts where an object ever shows less than this fraction of itself are redrawn.
    `render=False` skips frames and masks (objects and expressions only; `render_frame` draws on demand).
    """
    if size < 32 or num_frames < 1:
        raise ValueError("shapes clips need size >= 32 and num_frames >= 1")
    rng = np.random.default_rng(seed)
    background = _background(rng, size)
    for _ in range(100):
        objects = _sample_layout(rng, size, num_frames, motion_twin_p, colour_twin_p)
        order = rng.permutation(len(objects))
        full = _full_masks(objects, size, num_frames)
        visible = _visible(full, order)
        frac = visible.sum((2, 3)) / np.maximum(full.sum((2, 3)), 1)
        if frac.min() >= min_visible:
            break
    expressions = _expressions(rng, objects, expressions_per_object)
    clip = ShapesClip(seed=seed, frames=np.zeros((0,), np.uint8), objects=objects, expressions=expressions,
                      num_frames=num_frames, background=background, draw_order=[int(i) for i in order])
    if render:
        clip.frames = _paint(background, objects, visible)
        for i, ob in enumerate(objects):
            ob.masks = visible[i]
    return clip


def _visible(full: np.ndarray, order) -> np.ndarray:
    """Visible masks: an object is hidden wherever an object drawn after it covers it."""
    visible = full.copy()
    covered = np.zeros(full.shape[1:], dtype=bool)
    for i in reversed(list(order)):  # last drawn is on top
        visible[i] &= ~covered
        covered |= full[i]
    return visible


def _paint(background: np.ndarray, objects: list[ShapeObject], visible: np.ndarray) -> np.ndarray:
    frames = np.repeat(background[None], visible.shape[1], axis=0)
    for i, ob in enumerate(objects):
        frames[visible[i]] = COLOURS[ob.colour]
    return frames


def render_frame(clip: ShapesClip, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw frame t of a clip made with render=False: (frame [S,S,3] uint8, visible masks [N,S,S] bool)."""
    background = clip.background
    size = background.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    full = np.stack([_shape_mask(ob.shape, *ob.centre(t), ob.size, yy, xx) for ob in clip.objects])[:, None]
    visible = _visible(full, clip.draw_order)
    return _paint(background, clip.objects, visible)[0], visible[:, 0]


def split_seeds(split: str, num_clips: int, offset: int = 0) -> list[int]:
    """Clip seeds of a split: train, val and test draw from disjoint seed ranges."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown shapes split {split!r} (choose from {', '.join(SPLIT_SEEDS)})")
    if num_clips + offset > 1_000_000:
        raise ValueError("a shapes split holds at most 1,000,000 clips")
    base = SPLIT_SEEDS[split] + offset
    return list(range(base, base + num_clips))


# ---------------------------------------------------------------------------------------------------------
# Writing and reading a clip folder


def _palette() -> list[int]:
    pal = [0, 0, 0]
    for c in COLOURS.values():
        pal += list(c)
    pal += [255, 255, 255] * (256 - len(pal) // 3)
    return pal


def write_shapes(
    out_dir: str | os.PathLike,
    num_clips: int,
    seed: int = SPLIT_SEEDS["test"],
    size: int = 128,
    frames: int = 24,
    overwrite: bool = False,
    codec: str = "lossless",
    progress=None,
) -> dict:
    """Write clips with seeds seed..seed+num_clips-1 to `out_dir`, atomically; returns the index.

    The folder is built under a temporary name beside `out_dir` and renamed into place, so a failed or
    interrupted run leaves nothing behind. An existing `out_dir` is replaced only with `overwrite=True`.
    `progress(i, clip)` is called after each clip. The default seed is the start of the test split.
    """
    from PIL import Image

    from lbdt_cli.utils.atomic import atomic_dir, check_writable_output

    if num_clips < 1:
        raise ValueError("num_clips must be >= 1")
    out = check_writable_output(out_dir, overwrite)  # OutputError if it exists without overwrite
    index = {"format": FORMAT, "size": size, "num_frames": frames, "fps": FPS, "seed": seed, "codec": codec,
             "mask_format": "palette png per frame, value = object index + 1, 0 = background", "clips": {}}
    pal = _palette()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for i in range(num_clips):
            clip = generate_clip(seed + i, size=size, num_frames=frames)
            cid = clip.clip_id
            encode_video(clip.frames, tmp / f"{cid}.mp4", FPS, codec)
            mdir = tmp / cid / "masks"
            mdir.mkdir(parents=True)
            label = np.zeros(clip.frames.shape[:3], np.uint8)
            for k, ob in enumerate(clip.objects):
                label[ob.masks] = k + 1
            for t in range(frames):
                im = Image.fromarray(label[t], mode="P")
                im.putpalette(pal)
                im.save(mdir / f"{t:05d}.png")
            index["clips"][cid] = {
                "seed": clip.seed,
                "video": f"{cid}.mp4",
                "masks": f"{cid}/masks",
                "objects": [ob.describe() for ob in clip.objects],
                "expressions": [asdict(e) for e in clip.expressions],
            }
            if progress is not None:
                progress(i, clip)
        (tmp / "expressions.json").write_text(json.dumps(index, indent=1))
    return index


def read_index(root: str | os.PathLike) -> dict:
    """The `expressions.json` of a folder written by `write_shapes`, checked: InputError naming the file
    when it is missing or not a FORMAT index (every clip has video, masks and expressions)."""
    index_path = Path(root) / "expressions.json"
    if not index_path.is_file():
        raise InputError(f"missing {index_path}: expected a shapes index (written by `lbdt make-shapes`)")
    try:
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"format {index.get('format')!r}")
        int(index["num_frames"])
        for cid, entry in index["clips"].items():
            missing = [k for k in ("video", "masks", "expressions") if k not in entry]
            if missing:
                raise KeyError(f"clip {cid} has no {missing[0]!r}")
            for e in entry["expressions"]:
                str(e["text"]), int(e["object"])  # noqa: B018 (type check)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{index_path}: expected a {FORMAT} index ({exc})") from None
    return index


def read_shapes(root: str | os.PathLike) -> list[ShapesClip]:
    """Read a folder written by `write_shapes` back into clips (frames decoded from the mp4)."""
    from PIL import Image

    root = Path(root)
    index = read_index(root)
    clips = []
    for cid, entry in index["clips"].items():
        frames = decode_video(root / entry["video"])
        masks = []
        for t in range(len(frames)):
            with Image.open(root / entry["masks"] / f"{t:05d}.png") as im:
                masks.append(np.array(im))
        label = np.stack(masks)
        objects = []
        for k, d in enumerate(entry["objects"]):
            ob = ShapeObject(d["colour"], d["shape"], d["size"], d["motion"], d["speed"], tuple(d["start"]))
            ob.masks = label == k + 1
            objects.append(ob)
        exprs = [Expression(**e) for e in entry["expressions"]]
        clips.append(ShapesClip(seed=entry["seed"], frames=frames, objects=objects, expressions=exprs,
                                num_frames=len(frames)))
    return clips


# ---------------------------------------------------------------------------------------------------------
# Training samples


class ShapesDataset:
    """(clip, frame t, expression) samples of a shapes split, drawn on demand (a torch map-style Dataset).

    Each item: dict(frame [S,S,3] uint8, prev_frame [S,S,3] uint8 (frame max(t - interval, 0)),
    mask [S,S] bool, text str, clip int, t int, needs_motion bool, kind str, group str (`expression_group`)).
    Frames are rendered per item
    from the clip's layout, so memory stays small for thousands of clips. `clips` (e.g. from `read_shapes`)
    replaces generation. With `input_size`, items also hold model-ready tensors (lbdt_cli.model.preprocess):
    image [3,s,s], frame_diff [3,s,s] (normalised) and target [1,s,s] float.
    """

    def __init__(
        self,
        split: str = "train",
        num_clips: int = 200,
        size: int = 128,
        num_frames: int = 24,
        interval: int = 6,
        clips: list[ShapesClip] | None = None,
        input_size: int | None = None,
        **generator_kwargs,
    ) -> None:
        self.interval = interval
        self.input_size = input_size
        if clips is None:
            clips = [generate_clip(s, size=size, num_frames=num_frames, render=False, **generator_kwargs)
                     for s in split_seeds(split, num_clips)]
        self.clips = clips
        self.samples = [
            (ci, t, ei)
            for ci, clip in enumerate(clips)
            for t in range(clip.frames.shape[0] if clip.frames.ndim == 4 else clip.num_frames)
            for ei in range(len(clip.expressions))
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def _frame(self, clip: ShapesClip, t: int) -> tuple[np.ndarray, np.ndarray]:
        if clip.frames.ndim == 4:
            return clip.frames[t], np.stack([ob.masks[t] for ob in clip.objects])
        return render_frame(clip, t)

    def __getitem__(self, idx: int) -> dict:
        ci, t, ei = self.samples[idx]
        clip = self.clips[ci]
        expr = clip.expressions[ei]
        frame, masks = self._frame(clip, t)
        from lbdt_cli.model.preprocess import previous_frame_index

        prev, _ = self._frame(clip, previous_frame_index(t, self.interval))
        item = {
            "frame": frame, "prev_frame": prev, "mask": masks[expr.object], "text": expr.text,
            "clip": ci, "t": t, "needs_motion": expr.needs_motion, "kind": expr.kind,
            "group": expression_group(expr.needs_motion),
        }
        if self.input_size:
            import torch
            import torch.nn.functional as F

            from lbdt_cli.model.preprocess import frame_difference, normalize_frames

            x = normalize_frames(torch.from_numpy(np.stack([frame, prev])), self.input_size)
            m = torch.from_numpy(item["mask"])[None, None].float()
            m = F.interpolate(m, size=(self.input_size,) * 2, mode="bilinear", antialias=True) >= 0.5
            item.update(image=x[0], frame_diff=frame_difference(x[0], x[1]), target=m[0].float())
        return item
