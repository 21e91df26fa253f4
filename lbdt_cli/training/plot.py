"""metrics.jsonl -> metrics.png: training loss and IoU per step, validation IoU per epoch.

matplotlib is used when installed; otherwise the curves are drawn with OpenCV (already a dependency)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def read_metrics(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    train, val = [], []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            (val if rec.get("type") == "val" else train).append(rec)
    return train, val


def plot_metrics(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> None:
    train, val = read_metrics(metrics_path)
    panels = [
        ("train loss", [("loss", [r["step"] for r in train], [r["loss_avg"] for r in train], (200, 80, 30))]),
        ("IoU", [("train IoU", [r["step"] for r in train], [r["iou_avg"] for r in train], (30, 120, 200)),
                 ("val mean IoU", [r["step"] for r in val], [r.get("mean_iou", np.nan) for r in val], (30, 160, 60)),
                 ("val needs-motion", [r["step"] for r in val], [r.get("mean_iou_needs_motion", np.nan) for r in val],
                  (160, 40, 160))]),
    ]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_cv2(panels, out_path)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (title, series) in zip(axes, panels):
        for label, xs, ys, colour in series:
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label,
                        color=tuple(c / 255 for c in colour))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    tmp = Path(out_path).with_name(f".{Path(out_path).name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_path)


def _plot_cv2(panels, out_path) -> None:
    import cv2

    w, h, m = 480, 320, 40
    canvas = np.full((h, w * len(panels), 3), 255, np.uint8)
    for p, (title, series) in enumerate(panels):
        x0 = p * w
        pts = [(x, y) for _, xs, ys, _ in series for x, y in zip(xs, ys) if np.isfinite(y)]
        cv2.rectangle(canvas, (x0 + m, m // 2), (x0 + w - m // 2, h - m), (0, 0, 0), 1)
        cv2.putText(canvas, title, (x0 + m, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        if not pts:
            continue
        xmin, xmax = min(x for x, _ in pts), max(x for x, _ in pts)
        ymin, ymax = min(y for _, y in pts), max(y for _, y in pts)
        xmax, ymax = (xmax if xmax > xmin else xmin + 1), (ymax if ymax > ymin else ymin + 1e-3)

        def px(x, y):
            return (int(x0 + m + (x - xmin) / (xmax - xmin) * (w - 1.5 * m)),
                    int(h - m - (y - ymin) / (ymax - ymin) * (h - 1.5 * m)))

        for label_y, text in ((ymax, f"{ymax:.3g}"), (ymin, f"{ymin:.3g}")):
            cv2.putText(canvas, text, (x0 + 2, px(xmin, label_y)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"step {xmin}..{xmax}", (x0 + m, h - m + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for k, (label, xs, ys, colour) in enumerate(series):
            bgr = colour[::-1]
            line = [px(x, y) for x, y in zip(xs, ys) if np.isfinite(y)]
            for a, b in zip(line, line[1:]):
                cv2.line(canvas, a, b, bgr, 1, cv2.LINE_AA)
            for q in line if len(line) < 30 else []:
                cv2.circle(canvas, q, 3, bgr, -1)
            cv2.putText(canvas, label, (x0 + m + 6, m + 4 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, bgr, 1,
                        cv2.LINE_AA)
    tmp = Path(out_path).with_name(f".{Path(out_path).name}.tmp.png")
    cv2.imwrite(str(tmp), canvas)
    os.replace(tmp, out_path)
