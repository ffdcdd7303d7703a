"""Small PNG charts drawn with Pillow (no plotting library is a dependency): line charts and grouped bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (23, 190, 207),
           (140, 86, 75), (227, 119, 194), (127, 127, 127))
WIDTH, HEIGHT, MARGIN = 720, 400, 56


def _frame(title: str, width: int = WIDTH, height: int = HEIGHT) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 12), title, fill="black")
    draw.rectangle((MARGIN, MARGIN, width - MARGIN // 2, height - MARGIN), outline=(120, 120, 120))
    return image, draw


def line_chart(path: str | Path, title: str, series: dict[str, tuple[Sequence[float], Sequence[float]]],
               x_label: str, y_label: str) -> Path:
    """One line per series {name: (xs, ys)}, shared axes, a legend; written to ``path`` (PNG)."""
    image, draw = _frame(title)
    xs = [x for values, _ in series.values() for x in values]
    ys = [y for _, values in series.values() for y in values]
    if not xs:
        raise ValueError("line_chart needs at least one point")
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, top, right, bottom = MARGIN, MARGIN, WIDTH - MARGIN // 2, HEIGHT - MARGIN

    def point(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    for index, (name, (sx, sy)) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        points = [point(x, y) for x, y in zip(sx, sy)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((right - 170, top + 8 + 14 * index), f"— {name}", fill=colour)
    draw.text((left, bottom + 8), f"{x0:g}", fill="black")
    draw.text((right - 40, bottom + 8), f"{x1:g}", fill="black")
    draw.text((4, bottom - 6), f"{y0:.3g}", fill="black")
    draw.text((4, top), f"{y1:.3g}", fill="black")
    draw.text(((left + right) // 2 - 30, bottom + 24), x_label, fill="black")
    draw.text((4, top - 20), y_label, fill="black")
    image.save(path)
    return Path(path)


def bar_chart(path: str | Path, title: str, groups: Sequence[str], series: dict[str, Sequence[float]]) -> Path:
    """Grouped bars: one group per metric, one bar per series, each group scaled to its own maximum."""
    image, draw = _frame(title)
    left, top, right, bottom = MARGIN, MARGIN, WIDTH - MARGIN // 2, HEIGHT - MARGIN
    slot = (right - left) / max(len(groups), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for g, group in enumerate(groups):
        values = [abs(values[g]) for values in series.values()]
        top_value = max(values) or 1.0
        for s, (name, column) in enumerate(series.items()):
            value = column[g]
            height = abs(value) / top_value * (bottom - top - 20)
            x = left + g * slot + slot * 0.1 + s * bar
            draw.rectangle((x, bottom - height, x + bar - 2, bottom), fill=PALETTE[s % len(PALETTE)])
            draw.text((x, bottom - height - 12), f"{value:.2f}", fill="black")
        draw.text((left + g * slot + 4, bottom + 8), group[:18], fill="black")
    for s, name in enumerate(series):
        draw.text((right - 170, top + 8 + 14 * s), f"■ {name}", fill=PALETTE[s % len(PALETTE)])
    image.save(path)
    return Path(path)
