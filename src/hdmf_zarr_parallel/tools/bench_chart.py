"""The PNG chart of ``hdmf-zarr-parallel bench``: MB/s per writer, one group of bars per case.

matplotlib is an optional dependency (the ``[bench]`` extra) and is imported here only, when a
chart is drawn: :func:`pyplot` says which extra to install where it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .bench import BenchRow

BENCH_EXTRA = "pip install 'hdmf-zarr-parallel[bench]'"


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or :class:`MissingExtraError`."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(f"the chart needs matplotlib, from the bench extra: {BENCH_EXTRA}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_chart(rows: list[BenchRow], png: Path, title: str) -> Path:
    """A grouped bar chart of MB/s: one group per case, one bar per writer (stock in grey)."""
    plt = pyplot()
    done = [r for r in rows if not r.skipped and r.seconds]
    cases = list(dict.fromkeys(r.case for r in done))
    writers = list(dict.fromkeys(r.writer for r in done))
    labels = {r.writer: r.label for r in done}
    stock = {r.writer for r in done if r.stock}
    width = 0.8 / max(1, len(writers))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(cases) * len(writers) / 2 + 3), 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    greys = iter(("#9a9a9a", "#5f5f5f"))
    ours = iter(colors)
    for i, writer in enumerate(writers):
        color = next(greys) if writer in stock else next(ours)
        xs, ys = [], []
        for j, case in enumerate(cases):
            match = [r for r in done if r.case == case and r.writer == writer]
            if match:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(match[0].mbps)
        bars = ax.bar(xs, ys, width * 0.92, label=labels[writer], color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(cases)), cases)
    ax.set_ylabel("write throughput (MB/s, uncompressed)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png
