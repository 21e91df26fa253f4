"""`lbdt eval --report`: one self-contained report.html (inline SVG charts, PNG images as data URIs; no
scripts, no network) to see in a minute where a model fails: the metrics beside the paper's, the P@K curve,
the IoU histogram, per-group breakdowns, and the worst and best samples as frame | GT | prediction."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Sequence

import numpy as np

from lbdt_cli.metrics import precision_at

EXAMPLES = 6  # worst and best samples shown
CURVE_K = tuple(round(0.05 * k, 2) for k in range(0, 21))  # P@K for K = 0, 0.05, ..., 1
LABELS = {"P@0.5": "P@0.5", "P@0.6": "P@0.6", "P@0.7": "P@0.7", "P@0.8": "P@0.8", "P@0.9": "P@0.9",
          "AP": "AP (LBDT)", "overall_iou": "overall IoU", "mean_iou": "mean IoU", "mAP_coco": "mAP (COCO)",
          "J": "J", "F": "F", "J&F": "J&F"}


def pick_examples(result, n: int = EXAMPLES) -> tuple[list[str], list[str]]:
    """(worst, best) sample ids by IoU; ties keep the dataset's order."""
    rs = result.accumulator.results
    order = sorted(range(len(rs)), key=lambda i: rs[i].iou)
    worst = [rs[i].sample_id for i in order[:n]]
    best = [rs[i].sample_id for i in reversed(order[-n:]) if rs[i].sample_id not in worst]
    return worst, best


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _png_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _thumb(rgb: np.ndarray, height: int = 150) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    if h == height:
        return rgb
    return np.array(Image.fromarray(rgb).resize((max(1, round(w * height / h)), height), Image.NEAREST))


def _tint(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = rgb.astype(np.float32).copy()
    out[mask] = 0.45 * out[mask] + 0.55 * np.array(colour, np.float32)
    return out.astype(np.uint8)


def example_strip(frame: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> str:
    """frame | GT (green) | prediction (red) as one PNG data URI."""
    gap = np.full((frame.shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([frame, gap, _tint(frame, gt, (0, 200, 0)), gap, _tint(frame, pred, (230, 30, 30))], axis=1)
    return _png_uri(_thumb(row))


def _svg_chart(points: Sequence[tuple[float, float]], kind: str, title: str, xlabel: str, ylabel: str) -> str:
    """A small line (kind="line") or bar (kind="bars") chart over x, y in [0, 1] as inline SVG."""
    w, h, left, bottom, top, right = 420, 260, 48, 40, 26, 12
    pw, ph = w - left - right, h - top - bottom
    X = lambda x: left + x * pw  # noqa: E731
    Y = lambda y: top + (1 - y) * ph  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" font-size="11">{t:g}</text>')
        parts.append(f'<text x="{X(t):.1f}" y="{h - bottom + 16}" text-anchor="middle" font-size="11">{t:g}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" stroke="#333"/>')
    if kind == "line":
        path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#1f6fd0" stroke-width="2"/>')
        parts += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="2.5" fill="#1f6fd0"><title>K={x:g}: {100 * y:.1f}%</title></circle>'
                  for x, y in points]
    else:
        bw = pw / max(len(points), 1)
        for x, y in points:
            parts.append(f'<rect x="{X(x) + 1:.1f}" y="{Y(y):.1f}" width="{bw - 2:.1f}" height="{y * ph:.1f}" '
                         f'fill="#e07b24"><title>{x:.1f}–{x + 0.1:.1f}: {100 * y:.1f}%</title></rect>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 6}" text-anchor="middle" font-size="12">{html.escape(xlabel)}</text>')
    parts.append(f'<text x="12" y="{top + ph / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 12 {top + ph / 2})">{html.escape(ylabel)}</text>')
    return "".join(parts) + "</svg>"


def _group_tables(result, dataset) -> str:
    by_sample = {s.sample_id: s for s in dataset.samples}
    groupings: dict[str, dict[str, list]] = {}
    for r in result.accumulator.results:
        s = by_sample.get(r.sample_id)
        for grouping, name in (dataset.report_groups(s) if s is not None else {}).items():
            groupings.setdefault(grouping, {}).setdefault(name, []).append(r)
    out = []
    if not groupings and result.metrics.get("by_group"):  # protocols scored without per-sample rows
        rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{g.get('num_samples', '')}</td><td>{_pct(g.get('J'))}</td>"
                       f"<td>{_pct(g.get('F'))}</td><td>{_pct(g.get('J&F'))}</td></tr>"
                       for n, g in result.metrics["by_group"].items())
        return ("<h2>By group</h2><table><tr><th>group</th><th>objects</th><th>J</th><th>F</th><th>J&amp;F</th></tr>"
                f"{rows}</table>")
    for grouping, groups in groupings.items():
        rows = []
        for name, rs in sorted(groups.items(), key=lambda kv: np.mean([r.iou for r in kv[1]])):
            ious = [r.iou for r in rs]
            si, su = sum(r.intersection for r in rs), sum(r.union for r in rs)
            p5 = precision_at(ious, (0.5,), result.accumulator.strict)[0.5]
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{len(rs)}</td><td>{_pct(float(np.mean(ious)))}</td>"
                        f"<td>{_pct(si / su if su else 1.0)}</td><td>{_pct(p5)}</td>"
                        f"<td class='bar'><span style='width:{100 * float(np.mean(ious)):.0f}%'></span></td></tr>")
        out.append(f"<h2>By {html.escape(grouping)} (worst first)</h2><table><tr><th>{html.escape(grouping)}</th>"
                   "<th>samples</th><th>mean IoU</th><th>overall IoU</th><th>P@0.5</th><th></th></tr>"
                   + "".join(rows) + "</table>")
    return "".join(out)


def render(result, dataset, reference: dict[str, dict], examples: dict[str, tuple[str, float, str]] | None = None,
           worst: Sequence[str] = (), best: Sequence[str] = ()) -> str:
    """The report as one HTML string. `examples`: sample id -> (image data URI, IoU, caption)."""
    m = result.metrics
    keys = [k for k in LABELS if k in m]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in reference)
    rows = "".join(f"<tr><td>{LABELS[k]}</td><td>{_pct(m[k])}</td>"
                   + "".join(f"<td>{ref[k]:.1f}</td>" if k in ref else "<td>–</td>" for ref in reference.values())
                   + "</tr>" for k in keys)
    meta = result.meta
    info = [f"{html.escape(result.dataset)} {html.escape(result.split)}", f"protocol {html.escape(result.protocol)}",
            f"{m.get('num_samples', m.get('num_objects', 0))} {'samples' if 'num_samples' in m else 'objects'}"]
    if meta.get("checkpoint"):
        info.append(f"checkpoint {html.escape(str(meta['checkpoint']))}")
    if meta.get("predictions"):
        info.append(f"predictions {html.escape(str(meta['predictions']))}")
    charts = ""
    ious = [r.iou for r in result.accumulator.results]
    if ious:
        curve = precision_at(ious, CURVE_K, result.accumulator.strict)
        hist = np.histogram(np.clip(ious, 0, 1), bins=10, range=(0, 1))[0] / len(ious)
        charts = ("<div class='charts'>"
                  + _svg_chart([(k, v) for k, v in curve.items()], "line", "P@K: share of samples with IoU "
                               + (">" if result.accumulator.strict else "≥") + " K", "K", "P@K")
                  + _svg_chart([(0.1 * b, float(v)) for b, v in enumerate(hist)], "bars", "IoU histogram",
                               "IoU", "share of samples")
                  + "</div>")
    sections = []
    for title, ids in (("Worst samples", worst), ("Best samples", best)):
        cards = "".join(f"<figure><img src='{examples[i][0]}' alt='{html.escape(i)}'><figcaption><b>IoU "
                        f"{examples[i][1]:.3f}</b> · {html.escape(examples[i][2])}</figcaption></figure>"
                        for i in ids if examples and i in examples)
        if cards:
            sections.append(f"<h2>{title}</h2><p class='note'>frame | ground truth (green) | prediction (red)</p>"
                            f"<div class='examples'>{cards}</div>")
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in meta.get("warnings", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lbdt eval: {html.escape(result.dataset)} {html.escape(result.split)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
.meta, .note {{ color: #555; font-size: 13px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
td.bar {{ width: 140px; }} td.bar span {{ display: block; height: 10px; background: #1f6fd0; }}
.charts {{ display: flex; gap: 24px; flex-wrap: wrap; }}
.examples {{ display: flex; flex-direction: column; gap: 10px; }}
figure {{ margin: 0; }} figure img {{ image-rendering: pixelated; border: 1px solid #ccc; }}
figcaption {{ font-size: 13px; }}
</style></head><body>
<h1>lbdt eval report</h1>
<p class="meta">{' · '.join(info)}<br>resolution: {html.escape(result.resolution)}</p>
{f"<ul class='note'>{notes}</ul>" if notes else ""}
<h2>Metrics (%)</h2>
<table><tr><th>metric</th><th>ours</th>{head}</tr>{rows}</table>
{charts}
{_group_tables(result, dataset)}
{''.join(sections)}
</body></html>
"""
