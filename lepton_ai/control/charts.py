"""Charts drawn on the server as SVG: no script, no library, nothing fetched — a page with a chart works
offline and weighs what its points weigh."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
# a bar chart draws at most this many bars (the largest), so ten thousand classes are still a light page
MAX_BARS = 60
# a bar's height and where bars start (labels to their left), in pixels
BAR, BAR_LEFT = 18, 150


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


def bar_chart(title: str, counts: Mapping[str, int], width: int = 600) -> Markup:
    """Return an SVG of one horizontal bar per label, scaled to the largest count (the MAX_BARS largest)."""
    if not counts:
        return Markup('<p class="muted">{} — nothing counted</p>').format(title)
    shown = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:MAX_BARS])
    if len(shown) < len(counts):
        title = f"{title} (the {len(shown)} largest of {len(counts)})"
    else:
        shown = dict(counts)
    # room for the labels on the left and the counts past the longest bar
    scale = (width - BAR_LEFT - 70) / max(max(shown.values()), 1)
    rows = [_bar(i * BAR, label, n, round(n * scale)) for i, (label, n) in enumerate(shown.items())]
    svg = Markup(
        '<svg class="chart" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" data-bars="{n}">'
        "<title>{t}</title>{rows}</svg>"
    ).format(w=width, h=len(shown) * BAR, n=len(shown), t=title, rows=Markup("").join(rows))
    return Markup("<figure><figcaption>{}</figcaption>{}</figure>").format(title, svg)


def _bar(y: int, label: str, count: int, length: int) -> Markup:
    """Draw one labelled bar with its count at its end (a long label cut short, whole in its tooltip)."""
    short = label if len(label) <= 22 else label[:21] + "…"
    return Markup(
        '<text x="{lx}" y="{ty}" text-anchor="end" class="tick">{short}</text>'
        '<rect x="{x}" y="{y}" width="{len}" height="{h}" fill="{fill}"><title>{label}: {n}</title></rect>'
        '<text x="{cx}" y="{ty}" class="tick">{n}</text>'
    ).format(
        lx=BAR_LEFT - 6,
        ty=y + BAR - 5,
        short=short,
        x=BAR_LEFT,
        y=y + 2,
        len=length,
        h=BAR - 4,
        fill=PALETTE[0],
        label=label,
        n=f"{count:,}",
        cx=BAR_LEFT + length + 4,
    )
