"""The summary of ``gpu_check/run.sh --layouts``: every layout and convert row of the JSON files it
wrote, with MB/s and the ratios to stock hdmf-zarr and to our ``threads`` engine in the same run,
printed and written as one JSON file with the device, driver and library versions.

    python3 gpu_check/layouts_summary.py RESULTS_DIR OUTPUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LAYOUT_FILES = ("layouts-gzip-blosc.json", "layouts-zstd.json")
CONVERT_FILE = "layouts-convert.json"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def summarize(results: Path) -> tuple[list[str], dict]:
    """The summary's lines and its JSON, from the files present under ``results`` (missing ones are named)."""
    lines, summary = [], {"layouts": [], "convert": [], "missing": [], "gpu": None, "machine": None}
    for name in (*LAYOUT_FILES, CONVERT_FILE):
        path = results / name
        if not path.exists():
            summary["missing"].append(name)
            lines.append(f"{name}: missing (its step failed, timed out or was skipped)")
            continue
        data = json.loads(path.read_text())
        summary["gpu"] = summary["gpu"] or data.get("gpu")
        summary["machine"] = summary["machine"] or data.get("machine")
        if name == CONVERT_FILE:
            for row in data["rows"]:
                summary["convert"].append(
                    {k: row.get(k) for k in ("config", "best_s", "MBps", "x_stock_export", "x_threads")}
                )
                lines.append(
                    f"convert  {row['config']:24s} {row['MBps']:7.0f} MB/s  {_ratio(row.get('x_stock_export')):>7s} stock export"
                    f"  {_ratio(row.get('x_threads')):>7s} threads"
                )
            continue
        for row in data["rows"]:
            keep = ("layout", "config", "best_s", "MBps", "x_stock_queue", "x_threads", "compression_ratio", "exact")
            summary["layouts"].append({k: row.get(k) for k in keep})
            lines.append(
                f"{row['layout']:34s} {row['config']:12s} {row['MBps']:7.0f} MB/s  {_ratio(row.get('x_stock_queue')):>7s} stock"
                f"  {_ratio(row.get('x_threads')):>7s} threads  exact={row['exact']}"
            )
    gpu = summary["gpu"] or {}
    device = "; ".join(f"{d.get('name')} (driver {d.get('driver')})" for d in gpu.get("nvidia_smi", [])) or "no GPU"
    versions = (summary["machine"] or {}).get("versions", {})
    head = [
        f"device: {device}; cupy {gpu.get('cupy')}, nvCOMP {gpu.get('nvcomp')}, gpu defaults {gpu.get('gpu_defaults')}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    return head + lines, summary


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    lines, summary = summarize(Path(argv[0]))
    print("\n".join(lines))
    Path(argv[1]).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 1 if summary["missing"] or not all(r["exact"] for r in summary["layouts"]) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
