"""Charts as inline SVG, drawn on the server: the report and the dashboard open with no network and no script.

Each function takes plain numbers and returns an ``<svg>`` element as a string (its text is escaped here).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bars", "histogram", "interval_plot"]

_W, _H, _PAD = 560, 220, 36
_INK, _BAR, _MARK = "#334", "#4a7bd0", "#d0504a"


def _frame(title: str, body: list[str], kind: str) -> str:
    return (f'<svg class="chart" data-chart="{escape(kind)}" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" aria-label="{escape(title)}">'
            f'<title>{escape(title)}</title>'
            f'<text x="{_PAD}" y="16" font-size="13" fill="{_INK}">{escape(title)}</text>'
            f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 8}" y2="{_H - _PAD}" stroke="{_INK}"/>'
            f'<line x1="{_PAD}" y1="28" x2="{_PAD}" y2="{_H - _PAD}" stroke="{_INK}"/>'
            + "".join(body) + "</svg>")


def bars(labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """One bar per label (counts by status, by tier)."""
    top = max([*values, 1])
    inner_w, inner_h = _W - _PAD - 8, _H - _PAD - 28
    step = inner_w / max(len(values), 1)
    body = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = inner_h * value / top
        x = _PAD + i * step + step * 0.1
        body.append(f'<rect class="bar" x="{x:.1f}" y="{_H - _PAD - h:.1f}" width="{step * 0.8:.1f}" '
                    f'height="{h:.1f}" fill="{_BAR}"><title>{escape(label)}: {value:g}</title></rect>'
                    f'<text x="{x + step * 0.4:.1f}" y="{_H - _PAD + 14}" font-size="11" text-anchor="middle" '
                    f'fill="{_INK}">{escape(label)}</text>'
                    f'<text x="{x + step * 0.4:.1f}" y="{_H - _PAD - h - 3:.1f}" font-size="10" '
                    f'text-anchor="middle" fill="{_INK}">{value:g}</text>')
    return _frame(title, body, "bars")


def histogram(values: Sequence[float], title: str, bins: int = 10, low: float = 0.0, high: float = 1.0) -> str:
    """Counts of ``values`` in ``bins`` equal bins over [low, high] (values outside are clipped in)."""
    counts = [0] * bins
    for v in values:
        i = int((min(max(v, low), high) - low) / (high - low) * bins)
        counts[min(i, bins - 1)] += 1
    width = (high - low) / bins
    labels = [f"{low + i * width:.1f}" for i in range(bins)]
    return bars(labels, counts, title).replace('data-chart="bars"', 'data-chart="histogram"', 1)


def interval_plot(points: Sequence[tuple[str, float, float, float]], title: str) -> str:
    """One mark per item with its interval (label, value, low, high), sorted by value, on a 0–1 scale: the
    annotators' reliabilities with their credible intervals."""
    shown = sorted(points, key=lambda p: p[1])
    inner_w, inner_h = _W - _PAD - 8, _H - _PAD - 28
    step = inner_w / max(len(shown), 1)
    y = lambda v: _H - _PAD - inner_h * min(max(v, 0.0), 1.0)  # noqa: E731
    body = [f'<text x="4" y="{y(1.0) + 4:.1f}" font-size="10" fill="{_INK}">1.0</text>',
            f'<text x="4" y="{y(0.5) + 4:.1f}" font-size="10" fill="{_INK}">0.5</text>']
    for i, (label, value, low, high) in enumerate(shown):
        x = _PAD + (i + 0.5) * step
        body.append(f'<g class="point"><title>{escape(label)}: {value:.3f} [{low:.3f}, {high:.3f}]</title>'
                    f'<line x1="{x:.1f}" y1="{y(low):.1f}" x2="{x:.1f}" y2="{y(high):.1f}" stroke="{_BAR}"/>'
                    f'<circle cx="{x:.1f}" cy="{y(value):.1f}" r="{min(3.0, max(step / 2, 1.0)):.1f}" '
                    f'fill="{_MARK}"/></g>')
    return _frame(title, body, "intervals")
