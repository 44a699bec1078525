"""Tiny hand-written SVG charts for the HTML report (no plotting dependency): lines and bars."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

W, H = 720, 240
ML, MR, MT, MB = 60, 16, 28, 44  # margins: room for axis labels


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _frame(title: str, x_label: str, y_label: str, y_max: float, body: list[str]) -> str:
    pw, ph = W - ML - MR, H - MT - MB
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="11">',
           f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
           f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for i in range(5):
        y = MT + ph - ph * i / 4
        out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{ML - 4}" y="{y + 4:.1f}" text-anchor="end">{y_max * i / 4:g}</text>')
    out.append(f'<text x="{ML + pw / 2}" y="{H - 8}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{MT + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {MT + ph / 2})">{escape(y_label)}</text>')
    out.extend(body)
    out.append("</svg>")
    return "\n".join(out)


def line_chart(points: Sequence[tuple[float, float]], *, title: str, x_label: str, y_label: str) -> str:
    """A polyline of (x, y) points."""
    if not points:
        return _frame(title, x_label, y_label, 1, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">'
                                                   "no data</text>"])
    pw, ph = W - ML - MR, H - MT - MB
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    span = (x1 - x0) or 1.0
    y_max = _nice_max(max(p[1] for p in points))
    coords = " ".join(f"{ML + pw * (x - x0) / span:.1f},{MT + ph - ph * y / y_max:.1f}" for x, y in points)
    body = [f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{coords}"/>']
    for i in range(5):
        x = x0 + span * i / 4
        body.append(f'<text x="{ML + pw * i / 4:.1f}" y="{MT + ph + 14}" text-anchor="middle">{x:.4g}</text>')
    return _frame(title, x_label, y_label, y_max, body)


def bar_chart(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]], *, title: str,
              x_label: str, y_label: str, max_labels: int = 40) -> str:
    """Grouped bars: one group per label, one bar per (name, values, colour) series, with a legend."""
    pw, ph = W - ML - MR, H - MT - MB
    n = max(1, len(labels))
    y_max = _nice_max(max((v for _, vals, _ in series for v in vals), default=1))
    group_w = pw / n
    bar_w = max(0.5, group_w * 0.8 / max(1, len(series)))
    body = []
    for s, (name, values, colour) in enumerate(series):
        for i, v in enumerate(values):
            h = ph * v / y_max
            x = ML + group_w * i + group_w * 0.1 + bar_w * s
            body.append(f'<rect x="{x:.1f}" y="{MT + ph - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                        f'fill="{colour}"><title>{escape(labels[i])} {escape(name)}: {v:g}</title></rect>')
        body.append(f'<rect x="{ML + 8 + 110 * s}" y="{MT + 6}" width="10" height="10" fill="{colour}"/>'
                    f'<text x="{ML + 22 + 110 * s}" y="{MT + 15}">{escape(name)}</text>')
    step = max(1, n // max_labels)
    for i in range(0, len(labels), step):
        x = ML + group_w * (i + 0.5)
        body.append(f'<text x="{x:.1f}" y="{MT + ph + 12}" text-anchor="end" font-size="9" '
                    f'transform="rotate(-45 {x:.1f} {MT + ph + 12})">{escape(labels[i])}</text>')
    return _frame(title, x_label, y_label, y_max, body)


def histogram(values: Sequence[float], *, bins: int = 30, title: str, x_label: str) -> str:
    """A histogram of `values` in equal-width bins."""
    if not values:
        return line_chart([], title=title, x_label=x_label, y_label="count")
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    labels = [f"{lo + width * i:.0f}" for i in range(bins)]
    return bar_chart(labels, [("messages", counts, "#2ca02c")], title=title, x_label=x_label, y_label="count",
                     max_labels=10)
