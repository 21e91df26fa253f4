"""Score a checkpoint on held-out Moving Shapes clips, split by whether an expression needs motion.

    python -m lbdt_cli.training.shapes_eval weights/lbdt_shapes_demo.pt --clips 50

IoU is computed per (expression, frame) at the clip's own resolution: logits are resized bilinearly
from the model input size to the frame size and thresholded at 0 (sigmoid 0.5); every frame counts,
the first ones included (their frame difference uses frame 0). "appearance" = expressions whose colour
and shape words alone single out the object (needs_motion False); "motion" = the rest.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_shapes(model, num_clips: int = 50, split: str = "test", size: int = 128, num_frames: int = 24,
                    interval: int | None = None, clips=None) -> dict:
    from lbdt_cli.data.shapes import generate_clip, split_seeds
    from lbdt_cli.model.preprocess import frame_difference, normalize_frames, previous_frame_index
    from lbdt_cli.model.text import TextEmbedder

    model.eval()
    interval = model.config.interval if interval is None else interval
    s = model.config.input_size
    embedder = TextEmbedder.for_model(model)
    if clips is None:
        clips = [generate_clip(seed, size=size, num_frames=num_frames) for seed in split_seeds(split, num_clips)]
    ious = {"appearance": [], "motion": []}
    per_kind: dict[str, list[float]] = {}
    for clip in clips:
        frames = torch.from_numpy(clip.frames)
        T = frames.shape[0]
        x = normalize_frames(frames, s)
        prev = x[[previous_frame_index(t, interval) for t in range(T)]]
        diff = frame_difference(x, prev)
        wv, wm, _ = embedder.embed([e.text for e in clip.expressions])
        text = model.encode_text(wv, wm)
        for j, e in enumerate(clip.expressions):
            logits, _ = model.forward_with_text(x, diff, text.index([j] * T))
            logits = F.interpolate(logits, size=frames.shape[1:3], mode="bilinear", align_corners=False)
            pred = (logits[:, 0] > 0)
            gt = torch.from_numpy(clip.objects[e.object].masks)
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float()
            iou = ((inter + 1e-6) / (union + 1e-6)).tolist()
            ious["motion" if e.needs_motion else "appearance"] += iou
            per_kind.setdefault(e.kind, []).extend(iou)
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return {
        "clips": len(clips), "split": split, "size": size, "num_frames": num_frames, "interval": interval,
        "mean_iou_appearance": mean(ious["appearance"]), "samples_appearance": len(ious["appearance"]),
        "mean_iou_needs_motion": mean(ious["motion"]), "samples_needs_motion": len(ious["motion"]),
        "mean_iou_all": mean(ious["appearance"] + ious["motion"]),
        "mean_iou_by_kind": {k: mean(v) for k, v in sorted(per_kind.items())},
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from lbdt_cli.model import load_checkpoint

    model = load_checkpoint(args.checkpoint)
    print(json.dumps(evaluate_shapes(model, args.clips, args.split), indent=1))


if __name__ == "__main__":
    main()
