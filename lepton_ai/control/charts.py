"""Charts drawn on the server as SVG: no script, no library, nothing fetched — a page with a chart works
offline and weighs what its points weigh."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from markupsafe import Markup

# colour-blind-safe (Okabe–Ito, then Tableau) so ten overlaid runs stay apart
PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#d55e00",
    "#cc79a7",
    "#56b4e9",
    "#f0e442",
    "#000000",
    "#8c564b",
    "#7f7f7f",
)


class Series(NamedTuple):
    """One line of a chart: its label and its (step, value) points."""

    label: str
    points: Sequence[tuple[int, float]]


class Frame(NamedTuple):
    """The plotting area in pixels and the data range it shows."""

    left: int
    top: int
    width: int
    height: int
    x0: float
    x1: float
    y0: float
    y1: float

    def x(self, value: float) -> int:
        """Return the pixel column of a step."""
        return self.left + round((value - self.x0) / ((self.x1 - self.x0) or 1) * self.width)

    def y(self, value: float) -> int:
        """Return the pixel row of a value (up is larger)."""
        return self.top + self.height - round((value - self.y0) / ((self.y1 - self.y0) or 1) * self.height)


def line_chart(title: str, series: Sequence[Series], width: int = 600, height: int = 220) -> Markup:
    """Return an SVG chart of `series` overlaid (one colour each, legend below), its points as integers."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return Markup('<p class="muted">{} — no points</p>').format(title)
    frame = _frame(drawn, width, height)
    lines = [_polyline(frame, s, PALETTE[i % len(PALETTE)]) for i, s in enumerate(drawn)]
    legend = [
        Markup('<span class="key"><i style="background:{}"></i>{}</span>').format(
            PALETTE[i % len(PALETTE)], s.label
        )
        for i, s in enumerate(drawn)
    ]
    svg = Markup(
        '<svg class="chart" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        'data-series="{n}"><title>{t}</title>{axes}{lines}</svg>'
    ).format(w=width, h=height, n=len(drawn), t=title, axes=_axes(frame), lines=Markup("").join(lines))
    return Markup('<figure><figcaption>{}</figcaption>{}<div class="legend">{}</div></figure>').format(
        title, svg, Markup("").join(legend)
    )


def _frame(series: Sequence[Series], width: int, height: int) -> Frame:
    """Fit every point of `series` (a flat line gets a band around it so it shows)."""
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points if math.isfinite(p[1])] or [0.0]
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 0.5
    return Frame(64, 10, width - 76, height - 36, min(xs), max(xs), y0 - pad, y1 + pad)


def _polyline(frame: Frame, series: Series, colour: str) -> Markup:
    """Draw one series; a single point gets a dot so it does not vanish."""
    pts = [(frame.x(x), frame.y(y)) for x, y in series.points if math.isfinite(y)]
    if len(pts) == 1:
        return Markup('<circle cx="{}" cy="{}" r="3" fill="{}" data-points="1"/>').format(*pts[0], colour)
    coords = " ".join(f"{x},{y}" for x, y in pts)
    return Markup(
        '<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}" data-points="{}"><title>{}</title>'
        "</polyline>"
    ).format(colour, coords, len(pts), series.label)


def _axes(frame: Frame) -> Markup:
    """Draw the frame with four labelled ticks on each axis."""
    parts = [
        Markup('<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#ccc"/>').format(
            frame.left, frame.top, frame.width, frame.height
        )
    ]
    for i in range(5):
        value = frame.y0 + (frame.y1 - frame.y0) * i / 4
        y = frame.y(value)
        parts.append(
            Markup('<text x="{}" y="{}" text-anchor="end" class="tick">{}</text>').format(
                frame.left - 4, y + 4, _short(value)
            )
        )
    # steps are whole numbers: a short run gets a tick per step, not fractions of one
    steps = sorted({round(frame.x0 + (frame.x1 - frame.x0) * i / 4) for i in range(5)})
    for step in steps:
        parts.append(
            Markup('<text x="{}" y="{}" text-anchor="middle" class="tick">{}</text>').format(
                frame.x(step), frame.top + frame.height + 16, step
            )
        )
    return Markup("").join(parts)


def _short(value: float) -> str:
    """Return a tick label: 3 significant digits, no trailing noise."""
    return f"{value:.3g}"
