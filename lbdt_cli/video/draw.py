"""Pictures made from masks: the overlay, DAVIS palette label images, attention grids. Pixels in,
pixels out; no files."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["COLORS", "davis_palette", "label_image", "draw_overlay", "render_attention"]

# Distinct, saturated colours (RGB) for expressions 0, 1, ... in overlays.
COLORS = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
    (70, 240, 240), (245, 130, 48), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]  # fmt: skip


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS annotation PNGs (index 0 black, 1 red, 2 green, ...)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def label_image(masks: np.ndarray) -> np.ndarray:
    """[E, H, W] 0/1 masks -> uint8 [H, W]: expression number + 1, 0 background; where masks
    overlap, the later expression wins."""
    label = np.zeros(masks.shape[1:], np.uint8)
    for e, m in enumerate(masks):
        label[m > 0] = e + 1
    return label


def draw_overlay(rgb: np.ndarray, masks: np.ndarray, expressions: Sequence[str], alpha: float = 0.45) -> np.ndarray:
    """Source frame with each mask tinted and outlined in its colour, and a legend of the expressions."""
    import cv2

    out = rgb.copy()
    H, W = out.shape[:2]
    for e, m in enumerate(masks):
        color = np.array(COLORS[e % len(COLORS)], np.float32)
        sel = m.astype(bool)
        if sel.any():
            out[sel] = (out[sel] * (1 - alpha) + color * alpha).astype(np.uint8)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), max(1, round(min(H, W) / 200)))
    _draw_legend(out, expressions)
    return out


def _draw_legend(out: np.ndarray, expressions: Sequence[str]) -> None:
    """`0: <expression>` lines in the top-left corner, kept to at most a third of the frame's height
    and 60% of its width: long texts are cut with "...", and lines that do not fit become "+N more"
    (a small frame with many expressions stays visible). Nothing on a frame too small for one line."""
    import cv2

    H, W = out.shape[:2]
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.3, min(H, W) / 720)
    thick = max(1, round(scale * 2))
    (_, th), base = cv2.getTextSize("0: Ag", font, scale, thick)
    line_h = th + base + 4
    room = int(H / 3) // line_h
    if room < 1:
        return
    lines = [(e, f"{e}: {text}") for e, text in enumerate(expressions)]
    if len(lines) > room:
        lines = lines[: room - 1] + [(None, f"+{len(expressions) - room + 1} more")]
    y = 0
    for e, label in lines:
        label = _fit(label, W * 0.6 - 8, font, scale, thick)
        (tw, _), _ = cv2.getTextSize(label, font, scale, thick)
        y += line_h
        cv2.rectangle(out, (0, y - line_h + 2), (tw + 8, y + 2), (0, 0, 0), -1)
        color = COLORS[e % len(COLORS)] if e is not None else (255, 255, 255)
        cv2.putText(out, label, (4, y - base), font, scale, color, thick, cv2.LINE_AA)


def _fit(label: str, width: float, font, scale: float, thick: int) -> str:
    import cv2

    if cv2.getTextSize(label, font, scale, thick)[0][0] <= width:
        return label
    while len(label) > 4 and cv2.getTextSize(label + "...", font, scale, thick)[0][0] > width:
        label = label[:-1]
    return label + "..."


def render_attention(rgb: np.ndarray, prev_rgb: np.ndarray | None, tokens: Sequence[str], maps: dict,
                     expression: str = "", tile: int = 160) -> np.ndarray:
    """A grid like the paper's Fig. 6: one column per word; top row, where the word looked in the
    frame; bottom row, where it looked in the frame difference |frame - previous frame|."""
    import cv2

    h, w = rgb.shape[:2]
    tw, th = tile, max(1, round(tile * h / w))
    frame = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
    diff_src = rgb if prev_rgb is None else cv2.absdiff(rgb, prev_rgb)
    diff = cv2.resize(diff_src, (tw, th), interpolation=cv2.INTER_AREA)
    if prev_rgb is not None:  # stretch so small motions are visible
        diff = cv2.normalize(diff, None, 0, 255, cv2.NORM_MINMAX)
    words = list(tokens) or ["<none>"]
    label_h = 18
    rows = []
    for name, base in (("frame", frame), ("difference", diff)):
        cells = []
        for n, word in enumerate(words):
            m = maps[name][n] if n < len(maps[name]) else np.zeros((2, 2), np.float32)
            m = (m - m.min()) / (m.max() - m.min() + 1e-8)
            heat = cv2.applyColorMap(cv2.resize((m * 255).astype(np.uint8), (tw, th)), cv2.COLORMAP_JET)
            cell = cv2.addWeighted(base, 0.5, cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), 0.5, 0)
            top = np.zeros((label_h, tw, 3), np.uint8)
            cv2.putText(top, f"{word} ({'frame' if name == 'frame' else 'diff'})", (3, label_h - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
            cells.append(np.concatenate([top, cell], axis=0))
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    title = np.zeros((22, grid.shape[1], 3), np.uint8)
    cv2.putText(title, expression[:200], (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return np.concatenate([title, grid], axis=0)
