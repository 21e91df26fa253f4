"""Ref-DAVIS17 as ReferFormer, SgMg, OnlineRefer and SAMWISE score it (`lbdt eval --protocol unsupervised`).

For each video and each annotation set (Davis17_annot1, annot1_full_video, annot2, annot2_full_video):
1. every expression of the set is predicted on every frame (probabilities at the frame's size);
2. the masks are merged into one indexed mask per frame: a pixel goes to the expression with the highest
   probability among those >= 0.5 (the first in object-id order on a tie), else to the background;
   labels are 1..N in the order of the expressions' object ids (sorted as text);
3. the indexed masks are scored with the unsupervised DAVIS evaluation: GT objects are the ids of the
   first frame of Annotations_unsupervised (void 255 excluded), J and F are computed for every
   (predicted label, GT object) pair on every frame, the pairs are matched by the Hungarian algorithm on
   the mean of (J + F) / 2 over frames, and each GT object gets the mean J and F of its match (an
   unmatched GT object meets an empty prediction).
J and F of a set are the means over all GT objects of its videos; the reported J, F and J&F are the means
over the sets (each set is also reported under `by_group`). See docs/eval.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from lbdt_cli.errors import InputError
from lbdt_cli.metrics import MetricAccumulator, boundary_f, region_j

MAX_PROPOSALS = 20  # the DAVIS evaluation refuses more labels than this


def annotation_plan(dataset) -> dict[tuple[str, str], list]:
    """{(video, set): [(label, expression_id), ...]} with labels 1..N in object-id (text) order."""
    plan: dict[tuple[str, str], dict[str, str]] = {}
    for s in dataset.samples:
        plan.setdefault((s.video_id, dataset.annotation_set(s)), {}).setdefault(s.expression_id, s.object_id)
    out = {}
    for key, exprs in plan.items():
        order = sorted(exprs, key=lambda e: exprs[e])  # stable: file order among equal ids
        out[key] = [(k + 1, e) for k, e in enumerate(order)]
    return out


def merge_frame(probs: Iterable[tuple[int, np.ndarray]]) -> np.ndarray:
    """(label, probability H×W) in label order -> indexed mask uint8: highest probability >= 0.5 wins."""
    best = label = None
    for k, p in probs:
        if best is None:
            best = np.zeros(p.shape, np.float32)
            label = np.zeros(p.shape, np.uint8)
        take = (p >= 0.5) & (p > best)
        best[take] = p[take]
        label[take] = k
    return label


def score_video(labels: list[np.ndarray], gts: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Mean J and F per GT object of one video (unsupervised DAVIS evaluation, Hungarian matching)."""
    from scipy.optimize import linear_sum_assignment

    first = np.where(gts[0] == 255, 0, gts[0])
    num_gt = int(first.max(initial=0))
    if num_gt == 0:
        return [], []
    num_res = max(max(int(l.max(initial=0)) for l in labels), num_gt)
    if num_res > MAX_PROPOSALS:
        raise InputError(f"{num_res} labels in one video: the DAVIS evaluation takes at most {MAX_PROPOSALS}")
    j = np.zeros((num_res, num_gt, len(labels)))
    f = np.zeros_like(j)
    for t, (lab, gt) in enumerate(zip(labels, gts)):
        void = gt == 255
        for g in range(num_gt):
            gmask = gt == g + 1
            for r in range(num_res):
                pmask = lab == r + 1
                j[r, g, t] = region_j(pmask, gmask, void)
                f[r, g, t] = boundary_f(pmask, gmask, void)
    rows, cols = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    return ([float(np.nanmean(j[r, c])) for r, c in zip(rows, cols)],
            [float(np.nanmean(f[r, c])) for r, c in zip(rows, cols)])


def _gt_frames(dataset, video: str) -> list[np.ndarray]:
    from lbdt_cli.data.common import read_index_png

    return [read_index_png(dataset.ann_dir / video / f"{f}.png") for f in dataset.frames_of(video)]


def _summarize(per_set: dict[str, tuple[list, list]]) -> dict:
    groups = {}
    for name, (js, fs) in per_set.items():
        j, f = float(np.mean(js)) if js else float("nan"), float(np.mean(fs)) if fs else float("nan")
        groups[name] = {"J": j, "F": f, "J&F": (j + f) / 2, "num_samples": len(js)}
    j = float(np.mean([g["J"] for g in groups.values()])) if groups else float("nan")
    f = float(np.mean([g["F"] for g in groups.values()])) if groups else float("nan")
    return {"J": j, "F": f, "J&F": (j + f) / 2, "num_objects": sum(g["num_samples"] for g in groups.values()),
            "num_sets": len(groups), "by_group": groups}


def _result(dataset, metrics: dict, meta: dict):
    from lbdt_cli.evaluation import EvalResult, resolution_note

    return EvalResult(dataset.name, dataset.split, "unsupervised", resolution_note("unsupervised"),
                      MetricAccumulator(), metrics, meta)


def _write_png(path: Path, label: np.ndarray) -> None:
    from PIL import Image

    from lbdt_cli.video.draw import davis_palette

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label, mode="P")
    im.putpalette(davis_palette())
    im.save(path)


def evaluate_model_unsupervised(dataset, predictor, *, save_masks: str | os.PathLike | None = None,
                                progress: Callable[[int], None] | None = None):
    from lbdt_cli.evaluation import predict_samples

    _check_dataset(dataset)
    plan = annotation_plan(dataset)
    by_key = {(s.video_id, s.expression_id, s.frame): s for s in dataset.samples}
    # frame-major order inside each (video, set): a frame's masks are merged as soon as they are all there
    ordered = [by_key[v, e, f] for (v, a), exprs in plan.items() for f in dataset.frames_of(v) for _, e in exprs]
    label_of = {(v, e): k for (v, a), exprs in plan.items() for k, e in exprs}
    per_set: dict[str, tuple[list, list]] = {}
    pending: list[tuple[int, np.ndarray]] = []
    labels: list[np.ndarray] = []
    for s, _mask, _score, p in predict_samples(dataset, ordered, predictor, progress=progress):
        k = (s.video_id, dataset.annotation_set(s))
        pending.append((label_of[s.video_id, s.expression_id], p))
        if len(pending) == len(plan[k]):
            labels.append(merge_frame(pending))
            pending = []
            if save_masks is not None:
                _write_png(Path(save_masks) / k[1] / k[0] / f"{s.frame}.png", labels[-1])
            if len(labels) == len(dataset.frames_of(k[0])):
                js, fs = score_video(labels, _gt_frames(dataset, k[0]))
                per_set.setdefault(k[1], ([], []))[0].extend(js)
                per_set[k[1]][1].extend(fs)
                labels = []
    meta = {"checkpoint_config": predictor.model.config.name, "input_size": predictor.input_size,
            "interval": dataset.interval, "sets": sorted(per_set)}
    return _result(dataset, _summarize(per_set), meta)


def evaluate_predictions_unsupervised(dataset, root: Path, progress: Callable[[int], None] | None = None):
    """Score indexed PNGs DIR/<set>/<video>/<frame>.png (as --save-masks writes them under this protocol)."""
    _check_dataset(dataset)
    from lbdt_cli.data.common import read_index_png

    sets = sorted({a for (_, a) in annotation_plan(dataset)})
    found = [a for a in sets if (root / a).is_dir()]
    if not found:
        raise InputError(f"{root}: expected one folder per annotation set ({', '.join(sets)}) holding "
                         "<video>/<frame>.png indexed masks")
    per_set: dict[str, tuple[list, list]] = {}
    for a in found:
        for v in sorted({v for (v, b) in annotation_plan(dataset) if b == a}):
            labels = [read_index_png(root / a / v / f"{f}.png") for f in dataset.frames_of(v)]
            js, fs = score_video(labels, _gt_frames(dataset, v))
            per_set.setdefault(a, ([], []))[0].extend(js)
            per_set[a][1].extend(fs)
            if progress is not None:
                progress(len(labels))
    return _result(dataset, _summarize(per_set), {"predictions": str(root), "sets": found})


def _check_dataset(dataset) -> None:
    if not hasattr(dataset, "annotation_set"):
        raise InputError(f"--protocol unsupervised applies to Ref-DAVIS17 (--dataset davis), not {dataset.name}")
