"""Small server-rendered SVG charts (no JavaScript): time series as polylines."""

from __future__ import annotations

import time
from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["COLORS", "line_chart"]

COLORS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed")


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def line_chart(
    title: str,
    ts: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    unit: str = "",
    width: int = 560,
    height: int = 150,
) -> Markup:
    """An inline ``<svg>`` with one polyline per series over the shared time axis `ts`."""
    pad_l, pad_r, pad_t, pad_b = 44, 8, 22, 20
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{pad_l}" y="14" class="chart-title">{escape(title)}</text>',
    ]
    values = [v for vs in series.values() for v in vs]
    if len(ts) < 2 or not values:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="chart-empty">'
            "no data yet</text></svg>"
        )
        return Markup("".join(parts))
    t0, t1 = ts[0], ts[-1]
    span = max(t1 - t0, 1e-9)
    vmax = max(values) or 1.0
    vmax *= 1.1
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + h - frac * h
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{pad_l - 4}" y="{y + 3:.1f}" text-anchor="end" class="axis">'
            f"{_fmt(frac * vmax)}{escape(unit)}</text>"
        )
    for label, t, anchor in (
        (time.strftime("%H:%M:%S", time.localtime(t0)), pad_l, "start"),
        (time.strftime("%H:%M:%S", time.localtime(t1)), pad_l + w, "end"),
    ):
        parts.append(
            f'<text x="{t}" y="{height - 4}" text-anchor="{anchor}" class="axis">{label}</text>'
        )
    legend_x = width - pad_r - sum(8 + 7 * len(name) for name in series)
    for i, (name, vs) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        points = " ".join(
            f"{pad_l + (t - t0) / span * w:.1f},{pad_t + h - (v / vmax) * h:.1f}"
            for t, v in zip(ts, vs, strict=False)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.6"/>'
        )
        parts.append(
            f'<text x="{legend_x}" y="14" class="legend" fill="{color}">{escape(name)}</text>'
        )
        legend_x += 8 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))
