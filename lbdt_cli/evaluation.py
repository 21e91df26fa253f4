"""`lbdt eval` as a library: run a model (or read a folder of masks) over a dataset's samples and score them.

    dataset = open_dataset("a2d", root, "test")   # lbdt_cli.data
    predictor = Predictor.from_checkpoint(checkpoint, glove=glove, device="auto", batch_size=8)
    result = evaluate_model(dataset, predictor, protocol="default")
    result.metrics            # {"P@0.5": ..., "AP": ..., "overall_iou": ..., "mean_iou": ..., ...}
    write_outputs(result, "runs/eval_a2d")  # metrics.json + samples.csv, atomically

Resolution (docs/eval.md): `protocol="default"` scores the mask at the frame's original size (logits upsampled
bilinearly, sigmoid > 0.5) against the raw GT, as MTTR / ReferFormer do. `protocol="lbdt"` reproduces the
authors' eval: the GT makes a round trip to input_size² (bilinear, align_corners=True, > 0), the prediction is
thresholded at input_size², and both are resized (nearest) to the original size before I and U are counted.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lbdt_cli.data.common import RvosDataset, Sample
from lbdt_cli.errors import InputError, LbdtError, OutputError
from lbdt_cli.metrics import MetricAccumulator, lbdt_gt_roundtrip, mask_confidence, resize_nearest

PROTOCOLS = ("default", "lbdt", "unsupervised")
METRIC_KEYS = ("P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "AP", "overall_iou", "mean_iou")
EXTRA_KEYS = ("mAP_coco", "J", "F", "J&F")
SCORES_FILE = "scores.json"


@dataclass
class EvalResult:
    dataset: str
    split: str
    protocol: str
    resolution: str
    accumulator: MetricAccumulator
    metrics: dict
    meta: dict = field(default_factory=dict)

    def metrics_json(self) -> dict:
        return {"metrics": self.metrics, **self.meta, "dataset": self.dataset, "split": self.split,
                "protocol": self.protocol, "resolution": self.resolution}


def resolution_note(protocol: str, input_size: int | None = None) -> str:
    if protocol == "unsupervised":
        return ("original frame size; per annotation set, the expressions' masks merged into one indexed mask "
                "per frame (probability >= 0.5, highest wins), scored by the unsupervised DAVIS evaluation")
    if protocol == "lbdt":
        s = input_size or 320
        return (f"original frame size; GT round trip through {s}x{s} (bilinear align_corners, >0), "
                f"prediction thresholded at {s}x{s}, both resized nearest (LBDT protocol)")
    return "original frame size, raw GT; prediction upsampled bilinearly then sigmoid > 0.5"


def paper_reference(dataset: RvosDataset | type[RvosDataset], config_name: str | None) -> dict[str, dict]:
    """The paper's numbers for this dataset (the reader class holds them), as printed beside ours."""
    ref = dataset.paper
    if config_name in ref:
        return {f"paper {config_name.upper().replace('LBDT', 'LBDT-')}": ref[config_name]}
    return {f"paper {k.upper().replace('LBDT', 'LBDT-')}": v for k, v in ref.items()}


def _accumulator(dataset: RvosDataset, strict: bool) -> MetricAccumulator:
    return MetricAccumulator(strict=strict, coco=True, davis=dataset.davis_metrics)


def _score(acc: MetricAccumulator, sample: Sample, pred: np.ndarray, gt: np.ndarray, void, score: float) -> None:
    acc.add(sample.sample_id, pred, gt, score=score, video_id=sample.video_id, frame=sample.frame,
            object_id=sample.object_id, expression_id=sample.expression_id, expression=sample.expression, void=void,
            group=sample.dataset.sample_group(sample) or "")


def _check_size(sample: Sample, pred_shape, gt_shape, what: str) -> None:
    if tuple(pred_shape) != tuple(gt_shape):
        raise InputError(f"{sample.video_id} frame {sample.frame}: {what} is {pred_shape[1]}x{pred_shape[0]} "
                         f"but its GT mask is {gt_shape[1]}x{gt_shape[0]}")


def _group_by_video(samples: Sequence[Sample]) -> list[tuple[str, list[Sample]]]:
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.video_id, []).append(s)
    return list(groups.items())


def _blocks(groups: list, min_pairs: int) -> list[list]:
    """Consecutive videos joined until a block holds at least `min_pairs` samples (a long video stays alone)."""
    blocks, cur, n = [], [], 0
    for g in groups:
        cur.append(g)
        n += len(g[1])
        if n >= min_pairs:
            blocks.append(cur)
            cur, n = [], 0
    if cur:
        blocks.append(cur)
    return blocks


def _shard(groups: list, rank: int, world_size: int) -> list:
    return groups[rank::world_size] if world_size > 1 else groups


# --------------------------------------------------------------------------- model side


def _require_masks(dataset: RvosDataset) -> None:
    if not dataset.has_masks:
        raise InputError(f"{dataset.name} {dataset.split} has no public masks to score against (it is scored by "
                         "the benchmark's server: write a submission with --submission FILE.zip)")


def predict_samples(dataset: RvosDataset, samples: Sequence[Sample], predictor, *, protocol: str = "default",
                    progress: Callable[[int], None] | None = None, rank: int = 0, world_size: int = 1):
    """Run the model over `samples` video by video; yields (sample, mask bool at the frame's size, confidence,
    probabilities). Each expression is encoded once per block of videos, pairs are batched."""
    chunk_size = max(predictor.batch_size, 1) * 4
    for block in _blocks(_shard(_group_by_video(samples), rank, world_size), chunk_size):
        # a block gathers short videos (J-HMDB scores 3 frames each) so that batches stay full
        frames: dict[tuple[str, str], np.ndarray] = {}
        for video_id, group in block:
            names = sorted({n for s in group for n in (s.frame, s.prev_frame)})
            frames.update({(video_id, n): f for n, f in dataset.load_frames(video_id, names).items()})
        pairs = [s for _, group in block for s in group]
        exprs = sorted({s.expression for s in pairs})
        vectors, mask, _ = predictor.embedder.embed(exprs)
        text = predictor.encode_text(vectors, mask)
        row = {e: i for i, e in enumerate(exprs)}
        for lo in range(0, len(pairs), chunk_size):
            chunk = pairs[lo : lo + chunk_size]
            args = ([frames[s.video_id, s.frame] for s in chunk], [frames[s.video_id, s.prev_frame] for s in chunk],
                    [row[s.expression] for s in chunk], text)
            probs = predictor.predict_pairs(*args, native=protocol == "lbdt")
            for s, p in zip(chunk, probs):
                if protocol == "lbdt":
                    # thresholded at the input size, then nearest to the frame's size (the authors' eval)
                    yield s, resize_nearest(p > 0.5, frames[s.video_id, s.frame].shape[:2]), mask_confidence(p, p > 0.5), p
                else:
                    yield s, p > 0.5, mask_confidence(p, p > 0.5), p
            if progress is not None:
                progress(len(chunk))


def write_submission(dataset: RvosDataset, predictor, path: str | os.PathLike, *, limit: int | None = None,
                     overwrite: bool = False, progress: Callable[[int], None] | None = None) -> dict:
    """The benchmark server's zip: one 8-bit PNG (0/255) per listed frame of every expression, at the
    frame's own size, named by `dataset.submission_layout`. Written to a temporary file, renamed on success."""
    import zipfile

    from PIL import Image

    from lbdt_cli.utils.atomic import atomic_path

    if dataset.submission_layout is None:
        raise LbdtError(f"--submission: {dataset.name} has no evaluation server (it is scored locally)")
    samples = dataset.samples[:limit] if limit else dataset.samples
    if not samples:
        raise InputError(f"{dataset.name}: no samples to predict in {dataset.root}")
    videos, exprs = set(), set()
    with atomic_path(path, overwrite=overwrite) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for s, pred, _score_, _p in predict_samples(dataset, samples, predictor, progress=progress):
            buf = io.BytesIO()
            Image.fromarray(pred.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
            zf.writestr(dataset.submission_layout.format(video=s.video_id, expression=s.expression_id,
                                                         frame=s.frame), buf.getvalue())
            videos.add(s.video_id)
            exprs.add((s.video_id, s.expression_id))
    return {"submission": str(path), "videos": len(videos), "expressions": len(exprs), "masks": len(samples)}


def evaluate_model(
    dataset: RvosDataset,
    predictor,
    *,
    protocol: str = "default",
    strict: bool = False,
    limit: int | None = None,
    save_masks: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> EvalResult:
    """Run the model of `predictor` (`Predictor.from_checkpoint`) on every sample (or the first `limit`)
    and score it. With world_size > 1 each rank takes every world_size-th video; call `gather_result`
    afterwards to join the shards."""
    import torch

    if protocol not in PROTOCOLS:
        raise LbdtError(f"unknown --protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")
    _require_masks(dataset)
    if protocol == "unsupervised":
        from lbdt_cli.davis_unsupervised import evaluate_model_unsupervised

        return evaluate_model_unsupervised(dataset, predictor, save_masks=save_masks, progress=progress)
    samples = dataset.samples[:limit] if limit else dataset.samples
    if not samples:
        raise InputError(f"{dataset.name}: no samples to evaluate in {dataset.root}")
    size = predictor.input_size
    acc = _accumulator(dataset, strict)
    scores: dict[str, float] = {}
    mask_dir = Path(save_masks) if save_masks else None
    for s, pred, score, p in predict_samples(dataset, samples, predictor, protocol=protocol,
                                             progress=progress, rank=rank, world_size=world_size):
        gt, void = s.load_gt()
        _check_size(s, pred.shape, gt.shape, "its frame")
        if protocol == "lbdt":
            gt = lbdt_gt_roundtrip(gt, size)
        _score(acc, s, pred, gt, void, score)
        if mask_dir is not None:
            _write_mask(mask_dir / dataset.mask_relpath(s), pred)
            scores[dataset.mask_relpath(s)] = score
    if mask_dir is not None:
        (mask_dir / SCORES_FILE).write_text(json.dumps(scores, indent=0, sort_keys=True))
    meta = {"checkpoint_config": predictor.model.config.name, "input_size": size,
            "confidence": "mean sigmoid probability inside the mask",
            "interval": dataset.interval, "num_samples_total": len(dataset.samples), "limit": limit,
            "torch_threads": torch.get_num_threads()}
    return EvalResult(dataset.name, dataset.split, protocol, resolution_note(protocol, size), acc,
                      acc.summary() if world_size == 1 else {}, meta)


def gather_result(result: EvalResult, dataset: RvosDataset) -> EvalResult:
    """Join the shards of a torch.distributed run: every rank gets the full accumulator, in the dataset's
    sample order, so the numbers are identical to one process."""
    import torch.distributed as dist

    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, result.accumulator.state())
    acc = MetricAccumulator(strict=result.accumulator.strict, coco=result.accumulator.coco,
                            davis=result.accumulator.davis)
    for st in states:
        acc.load_state(st)
    order = {s.sample_id: i for i, s in enumerate(dataset.samples)}
    perm = sorted(range(len(acc.results)), key=lambda i: order.get(acc.results[i].sample_id, len(order)))
    acc.results = [acc.results[i] for i in perm]
    acc._gt_rles = [acc._gt_rles[i] for i in perm]
    acc._pred_rles = [acc._pred_rles[i] for i in perm]
    result.accumulator = acc
    result.metrics = acc.summary()
    result.meta["world_size"] = dist.get_world_size()
    return result


def _write_mask(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


# --------------------------------------------------------------------------- predictions folder


def read_prediction_png(path: Path, nonzero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mask, grey level in [0,1]) of a prediction PNG: 8-bit grey masks are foreground at >= 128
    (any non-zero grey with `nonzero`, as MeViS's evaluation reads them); palette / 1-bit / 0-1 images
    are foreground where non-zero."""
    if not path.is_file():
        raise InputError(f"missing {path}: expected a predicted mask PNG")
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im.convert("L") if mode not in ("P", "L", "1") else im)
    except OSError as exc:
        raise InputError(f"{path}: cannot read PNG ({exc})") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a single-channel mask PNG")
    if mode in ("P", "1") or arr.max(initial=0) <= 1:
        return arr > 0, (arr > 0).astype(np.float32)
    if nonzero:
        return arr > 0, arr.astype(np.float32) / 255.0
    return arr >= 128, arr.astype(np.float32) / 255.0


def evaluate_predictions(
    dataset: RvosDataset,
    predictions: str | os.PathLike,
    *,
    protocol: str = "default",
    strict: bool = False,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Score a folder of masks laid out as `--save-masks` writes them. The COCO confidence comes from
    `scores.json` in the folder when present, else from the PNGs' grey levels (1.0 for binary masks)."""
    if protocol not in PROTOCOLS:
        raise LbdtError(f"unknown --protocol {protocol!r} (use {' or '.join(PROTOCOLS)})")
    root = Path(predictions)
    if not root.is_dir():
        raise InputError(f"predictions folder {root} does not exist")
    _require_masks(dataset)
    if protocol == "unsupervised":
        from lbdt_cli.davis_unsupervised import evaluate_predictions_unsupervised

        return evaluate_predictions_unsupervised(dataset, root, progress=progress)
    scores: dict[str, float] = {}
    if (root / SCORES_FILE).is_file():
        try:
            scores = {str(k): float(v) for k, v in json.loads((root / SCORES_FILE).read_text()).items()}
        except (ValueError, AttributeError) as exc:
            raise InputError(f"{root / SCORES_FILE}: expected {{mask path: confidence}} ({exc})") from None
    samples = dataset.samples[:limit] if limit else dataset.samples
    if not samples:
        raise InputError(f"{dataset.name}: no samples to evaluate in {dataset.root}")
    acc = _accumulator(dataset, strict)
    for k, s in enumerate(samples, start=1):
        rel = dataset.mask_relpath(s)
        pred, grey = read_prediction_png(root / rel, nonzero=dataset.prediction_nonzero)
        gt, void = s.load_gt()
        _check_size(s, pred.shape, gt.shape, f"prediction {root / rel}")
        if protocol == "lbdt":
            gt = lbdt_gt_roundtrip(gt)
        _score(acc, s, pred, gt, void, scores.get(rel, mask_confidence(grey, pred)))
        if progress is not None and (k % 64 == 0 or k == len(samples)):
            progress(64 if k % 64 == 0 else k % 64)
    note = ("original frame size, masks scored as found; GT round trip through 320x320 (bilinear align_corners, "
            ">0) then nearest back (LBDT protocol, GT side)" if protocol == "lbdt"
            else "original frame size, raw GT, masks scored as found")
    meta = {"predictions": str(root), "num_samples_total": len(dataset.samples), "limit": limit,
            "confidence": "scores.json" if scores else "mean PNG grey level inside the mask"}
    tied = tied_scores(acc)
    if tied:
        meta["warnings"] = [f"{tied} predicted masks share their confidence with another (binary PNGs"
                            f"{'' if scores else ' and no ' + SCORES_FILE}): COCO mAP then depends on the "
                            "order of the samples (here: by sample id)"]
    return EvalResult(dataset.name, dataset.split, protocol, note, acc, acc.summary(), meta)


def report_examples(dataset: RvosDataset, result: EvalResult, ids: Sequence[str], predictor=None,
                    predictions: str | os.PathLike | None = None) -> dict[str, tuple[str, float, str]]:
    """{sample id: (frame | GT | prediction PNG data URI, IoU, caption)} for the report's examples: the
    model is run again on these few samples (same engine), or their PNGs are read from `predictions`."""
    from lbdt_cli.report import example_strip

    by_id = {s.sample_id: s for s in dataset.samples}
    iou = {r.sample_id: r.iou for r in result.accumulator.results}
    samples = [by_id[i] for i in ids if i in by_id]
    masks: dict[str, np.ndarray] = {}
    if predictor is not None:
        for s, mask, _score_, _p in predict_samples(dataset, samples, predictor, protocol=result.protocol):
            masks[s.sample_id] = mask
    else:
        for s in samples:
            masks[s.sample_id] = read_prediction_png(Path(predictions) / dataset.mask_relpath(s),
                                                     nonzero=dataset.prediction_nonzero)[0]
    out = {}
    for s in samples:
        gt, _void = s.load_gt()
        out[s.sample_id] = (example_strip(s.load_frame(), gt, masks[s.sample_id]), iou[s.sample_id],
                            f"{s.video_id} frame {s.frame}: \u201c{s.expression}\u201d")
    return out


def write_report(output: str | os.PathLike, html_text: str, overwrite: bool = False) -> Path:
    from lbdt_cli.utils.atomic import atomic_path

    path = Path(output) / "report.html"
    with atomic_path(path, overwrite=True) as tmp:  # checked before the run (check_output_dir)
        tmp.write_text(html_text, encoding="utf-8")
    return path


def tied_scores(acc: MetricAccumulator) -> int:
    """How many non-empty predictions share their confidence with another one (COCO ranks ties by order)."""
    from collections import Counter

    counts = Counter(r.score for r in acc.results if r.pred_area > 0)
    return sum(n for n in counts.values() if n > 1)


# --------------------------------------------------------------------------- outputs


CSV_COLUMNS = ("sample_id", "video_id", "frame", "object_id", "expression_id", "expression", "iou",
               "intersection", "union", "pred_area", "gt_area", "score", "j", "f")


def samples_csv(result: EvalResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in result.accumulator.results:
        d = r.row()
        w.writerow([f"{d[c]:.6f}" if isinstance(d[c], float) else d[c] for c in CSV_COLUMNS])
    return buf.getvalue()


def check_output_dir(output: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early (OutputError) if `--output` could not take metrics.json and samples.csv: run before scoring."""
    from lbdt_cli.utils.atomic import check_writable_output

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--output {out} is a file, expected a folder")
    for name in OUTPUT_FILES:
        # also checks that the folder (or its nearest existing ancestor) is a writable folder
        check_writable_output(out / name, overwrite)
    return out


OUTPUT_FILES = ("metrics.json", "samples.csv")


def write_outputs(result: EvalResult, output: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Write `metrics.json` and `samples.csv` into `output`: both are written to temporary files first, then
    renamed into place together, so a failure while writing leaves neither (and no mixed old/new pair)."""
    from lbdt_cli.utils.atomic import atomic_path

    out = check_output_dir(output, overwrite)
    texts = {"metrics.json": json.dumps(result.metrics_json(), indent=2, default=float) + "\n",
             "samples.csv": samples_csv(result)}
    with contextlib.ExitStack() as stack:
        # each atomic_path renames its file on leaving; the two exits run back to back, after both writes
        for name in OUTPUT_FILES:
            tmp = stack.enter_context(atomic_path(out / name, overwrite=overwrite))
            tmp.write_text(texts[name])
    return [out / name for name in OUTPUT_FILES]
