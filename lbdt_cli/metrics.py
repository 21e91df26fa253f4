"""Referring-segmentation metrics: the IoU family, P@K, LBDT "AP", COCO mAP and DAVIS J/F.

Conventions (see docs/eval.md, "Protocol choices"):
- per-sample IoU = (I + 1e-6) / (U + 1e-6), as LBDT and MTTR compute it: an empty prediction on an
  empty GT scores 1.0, a non-empty prediction on an empty GT scores ~0.
- overall IoU = sum I / sum U over all samples; mean IoU = mean of per-sample IoU.
- P@K counts IoU >= K (LBDT); ``strict=True`` counts IoU > K on MTTR's float32 IoU (MTTR / ReferFormer).
- LBDT "AP" = mean of P@thr over thr = 0.50, 0.55, ..., 0.95 (no ranking involved).
- COCO mAP = pycocotools ``COCOeval(iouType="segm", useCats=0).stats[0]`` with one prediction per
  sample, ranked by its confidence = mean sigmoid probability inside the predicted mask (0 if empty).
- DAVIS J (region IoU, void excluded, empty union = 1) and boundary F (bound_th = 0.008), averaged
  per object over frames, then over objects; J&F = (J + F) / 2.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np

EPS = 1e-6
PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
# 0.50:0.05:0.95 written out so that no float drift decides a tie
AP_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
DAVIS_BOUND_TH = 0.008


# --------------------------------------------------------------------------- IoU family


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 0


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts |pred ∩ gt| and |pred ∪ gt| of two same-size binary masks."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in size")
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def sample_iou(intersection, union, eps: float = EPS):
    """LBDT / MTTR per-sample IoU: (I + eps) / (U + eps); empty vs empty gives 1.0. Numbers or arrays /
    tensors of counts (training logs it per batch on the device)."""
    return (intersection + eps) / (union + eps)


def mttr_iou(intersection, union) -> float:
    """Per-sample IoU as MTTR's evaluation computes it for P@K: (I + 1e-6) / (U + 1e-6) in float32, where
    the 1e-6 vanishes for any mask of more than a few pixels and I/U is rounded to float32. An exact tie
    then lands on float32(K): 0.5 stays 0.5 (not > 0.5), 0.7 and 0.9 round down, 0.6 and 0.8 round up."""
    eps = np.float32(EPS)
    return float((np.float32(intersection) + eps) / (np.float32(union) + eps))


def precision_at(
    ious: Sequence[float], thresholds: Iterable[float] = PRECISION_THRESHOLDS, strict: bool = False
) -> dict[float, float]:
    """Fraction of samples with IoU >= K (LBDT) or IoU > K (``strict``, MTTR) for each K."""
    arr = np.asarray(ious, dtype=np.float64)
    if arr.size == 0:
        return {float(k): float("nan") for k in thresholds}
    return {float(k): float(np.mean(arr > k if strict else arr >= k)) for k in thresholds}


def lbdt_ap(ious: Sequence[float], strict: bool = False) -> float:
    """LBDT's "AP": mean of P@thr over thr = 0.50:0.05:0.95 (docs/eval.md)."""
    return float(np.mean(list(precision_at(ious, AP_THRESHOLDS, strict).values())))


# --------------------------------------------------------------------------- LBDT resolution protocol


def lbdt_gt_roundtrip(gt: np.ndarray, size: int = 320) -> np.ndarray:
    """LBDT's GT at eval: resize to size×size (bilinear, align_corners=True), > 0 -> 1, then back
    to the original size with nearest (torch's default ``F.interpolate`` mode). Returns bool H×W."""
    import torch
    import torch.nn.functional as F

    h, w = gt.shape
    t = torch.from_numpy(_as_bool(gt).astype(np.float32))[None, None]
    small = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=True) > 0
    back = F.interpolate(small.float(), size=(h, w), mode="nearest")
    return back[0, 0].numpy() > 0.5


def resize_nearest(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest resize with torch's ``F.interpolate(mode='nearest')`` index rule (floor(i * in/out))."""
    h, w = mask.shape
    oh, ow = size_hw
    if (h, w) == (oh, ow):
        return mask
    rows = np.minimum(np.floor(np.arange(oh) * (h / oh)).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(ow) * (w / ow)).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


# --------------------------------------------------------------------------- DAVIS J and F


def disk(radius: int) -> np.ndarray:
    """Same footprint as ``skimage.morphology.disk(radius)``: x² + y² <= r², uint8."""
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS ``_seg2bmap`` at the mask's own size: a pixel is on the boundary if it differs from its
    east, south or south-east neighbour; the last row/column compare along the edge only and the
    bottom-right pixel is 0."""
    seg = _as_bool(seg)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def region_j(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """DAVIS region similarity J: I/U over non-void pixels; an empty union gives 1."""
    p, g = _as_bool(pred), _as_bool(gt)
    keep = np.ones_like(g) if void is None else ~_as_bool(void)
    inter = np.count_nonzero(p & g & keep)
    union = np.count_nonzero((p | g) & keep)
    return 1.0 if union == 0 else inter / union


def boundary_f(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = DAVIS_BOUND_TH
) -> float:
    """DAVIS boundary F-measure (``f_measure``): boundaries matched within a disk of radius
    d = ceil(bound_th * diagonal) (bound_th >= 1 is taken as pixels)."""
    p, g = _as_bool(pred), _as_bool(gt)
    keep = np.ones_like(g) if void is None else ~_as_bool(void)
    d = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*g.shape))
    fg_b = seg2bmap(p & keep)
    gt_b = seg2bmap(g & keep)
    footprint = disk(d)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), footprint) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), footprint) > 0
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.count_nonzero(fg_b & gt_dil) / n_fg
        recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- COCO mAP


def mask_confidence(prob: np.ndarray, mask: np.ndarray) -> float:
    """Confidence used to rank predictions for COCO mAP: mean probability inside the mask, 0 if empty."""
    m = _as_bool(mask)
    return float(np.asarray(prob, dtype=np.float64)[m].mean()) if m.any() else 0.0


def encode_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(_as_bool(mask).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_map(gt_rles: Sequence[dict], pred_rles: Sequence[dict], scores: Sequence[float]) -> dict[str, float]:
    """COCO segm mAP with one GT and one prediction per sample, category-agnostic (docs/eval.md).

    Returns {"mAP": stats[0], "AP50": stats[1], "AP75": stats[2]}. pycocotools' prints are swallowed.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not gt_rles:
        return {"mAP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
    images, annotations, results = [], [], []
    for k, (g, p, s) in enumerate(zip(gt_rles, pred_rles, scores), start=1):
        h, w = g["size"]
        images.append({"id": k, "height": h, "width": w})
        annotations.append(
            {
                "id": k,
                "image_id": k,
                "category_id": 1,
                "segmentation": g,
                "area": float(mask_utils.area(g)),
                "bbox": [float(v) for v in mask_utils.toBbox(g)],
                "iscrowd": 0,
            }
        )
        results.append({"image_id": k, "category_id": 1, "segmentation": p, "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "categories": [{"id": 1, "name": "dummy_class"}],
            "images": images,
            "annotations": annotations,
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.useCats = 0
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP": float(ev.stats[0]), "AP50": float(ev.stats[1]), "AP75": float(ev.stats[2])}


# --------------------------------------------------------------------------- accumulator


@dataclass
class SampleResult:
    """Scores of one sample (one expression on one frame)."""

    sample_id: str
    intersection: int
    union: int
    iou: float
    video_id: str = ""
    frame: str = ""
    object_id: str = ""
    expression_id: str = ""
    expression: str = ""
    pred_area: int = 0
    gt_area: int = 0
    score: float = float("nan")
    j: float = float("nan")
    f: float = float("nan")
    group: str = ""  # a subset reported on its own (shapes: "appearance" / "motion"); "" for none

    def row(self) -> dict:
        return asdict(self)


@dataclass
class MetricAccumulator:
    """Streams samples: keeps sums of I/U, one small SampleResult per sample and, when asked,
    the RLEs COCO mAP needs. ``merge`` joins accumulators from shards (e.g. DDP ranks)."""

    strict: bool = False
    coco: bool = False
    davis: bool = False
    results: list[SampleResult] = field(default_factory=list)
    _gt_rles: list[dict] = field(default_factory=list)
    _pred_rles: list[dict] = field(default_factory=list)

    def add(
        self,
        sample_id: str,
        pred: np.ndarray,
        gt: np.ndarray,
        *,
        prob: np.ndarray | None = None,
        score: float | None = None,
        video_id: str = "",
        frame: str = "",
        object_id: str = "",
        expression_id: str = "",
        expression: str = "",
        void: np.ndarray | None = None,
        group: str = "",
    ) -> SampleResult:
        """Score one binary prediction against its GT (same H×W). ``prob`` (or ``score``) gives the
        COCO confidence; ``void`` marks DAVIS void pixels (J/F only); ``group`` names a subset that
        ``summary()`` also reports on its own (``by_group``)."""
        p, g = _as_bool(pred), _as_bool(gt)
        inter, union = intersection_union(p, g)
        if score is None:
            score = mask_confidence(prob, p) if prob is not None else float(p.any())
        res = SampleResult(
            sample_id=sample_id,
            intersection=inter,
            union=union,
            iou=sample_iou(inter, union),
            video_id=video_id,
            frame=str(frame),
            object_id=str(object_id),
            expression_id=str(expression_id),
            expression=expression,
            pred_area=int(np.count_nonzero(p)),
            gt_area=int(np.count_nonzero(g)),
            score=float(score),
            group=group,
        )
        if self.davis:
            res.j = region_j(p, g, void)
            res.f = boundary_f(p, g, void)
        self.results.append(res)
        if self.coco:
            self._gt_rles.append(encode_rle(g))
            self._pred_rles.append(encode_rle(p))
        return res

    def merge(self, other: "MetricAccumulator") -> None:
        self.results.extend(other.results)
        self._gt_rles.extend(other._gt_rles)
        self._pred_rles.extend(other._pred_rles)

    def state(self) -> dict:
        """Picklable state for gathering across processes."""
        return {"results": [r.row() for r in self.results], "gt": self._gt_rles, "pred": self._pred_rles}

    def load_state(self, state: dict) -> None:
        self.results.extend(SampleResult(**r) for r in state["results"])
        self._gt_rles.extend(state["gt"])
        self._pred_rles.extend(state["pred"])

    def __len__(self) -> int:
        return len(self.results)

    def summary(self) -> dict[str, float]:
        """The metrics object: fractions in [0, 1]; keys as printed by ``lbdt eval --json``."""
        ious = [r.iou for r in self.results]
        sum_i = sum(r.intersection for r in self.results)
        sum_u = sum(r.union for r in self.results)
        out: dict[str, float] = {}
        # strict (MTTR): IoU > K on MTTR's float32 IoU, so exact ties count as MTTR counts them
        ranked = [mttr_iou(r.intersection, r.union) for r in self.results] if self.strict else ious
        for k, v in precision_at(ranked, PRECISION_THRESHOLDS, self.strict).items():
            out[f"P@{k:g}"] = v
        out["AP"] = lbdt_ap(ranked, self.strict) if ious else float("nan")
        if not ious:
            out["overall_iou"] = float("nan")
        else:
            out["overall_iou"] = 1.0 if sum_u == 0 else sum_i / sum_u
        out["mean_iou"] = float(np.mean(ious)) if ious else float("nan")
        if self.coco:
            # stable order so that sharded runs give the same ranking ties as one process
            order = sorted(range(len(self.results)), key=lambda i: self.results[i].sample_id)
            out["mAP_coco"] = coco_map(
                [self._gt_rles[i] for i in order],
                [self._pred_rles[i] for i in order],
                [self.results[i].score for i in order],
            )["mAP"]
        if self.davis:
            j, f = per_object_mean(self.results)
            out["J"], out["F"], out["J&F"] = j, f, (j + f) / 2
        out["num_samples"] = len(ious)
        groups = group_summary(self.results, self.davis)
        if groups:
            out["by_group"] = groups
        return out


def group_summary(results: Sequence[SampleResult], davis: bool = False) -> dict[str, dict]:
    """{group: {mean_iou, [J, F, J&F,] num_samples}} over the results that name a group."""
    groups: dict[str, list[SampleResult]] = {}
    for r in results:
        if r.group:
            groups.setdefault(r.group, []).append(r)
    out = {}
    for name, rs in sorted(groups.items()):
        g = {"mean_iou": float(np.mean([r.iou for r in rs]))}
        if davis:
            j, f = per_object_mean(rs)
            g.update({"J": j, "F": f, "J&F": (j + f) / 2})
        g["num_samples"] = len(rs)
        out[name] = g
    return out


def per_object_mean(results: Sequence[SampleResult]) -> tuple[float, float]:
    """DAVIS averaging: J and F are nanmean over each track's frames, then mean over tracks.
    A track is (video_id, object_id, expression_id): one referred object followed over its frames."""
    by_obj: dict[tuple[str, str, str], list[SampleResult]] = {}
    for r in results:
        by_obj.setdefault((r.video_id, r.object_id, r.expression_id), []).append(r)
    if not by_obj:
        return float("nan"), float("nan")
    j = [np.nanmean([r.j for r in rs]) for rs in by_obj.values()]
    f = [np.nanmean([r.f for r in rs]) for rs in by_obj.values()]
    return float(np.mean(j)), float(np.mean(f))
