"""The bench's outputs: the printed table, `bench.json` and the `bench.png` bar chart.

payload = write_outputs(rows, out_dir, command="engine bench", settings={...})
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from bench.common import cpu_model, format_table, hardware
from bench.suite import COLUMNS, TITLES
from engine.jsonfile import write_json

log = logging.getLogger(__name__)

BENCH_FORMAT = "engine.bench/1"


def table(rows: list[dict]) -> str:
    """The one table `engine bench` prints (column titles of `TITLES`)."""
    titled = [dict(zip(TITLES, (r.get(c) for c in COLUMNS), strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in format_table(titled, list(TITLES)).splitlines())


def _short_name(backend: str) -> str:
    return backend if len(backend) <= 44 else backend[:42] + ".."


def plot(rows: list[dict], path: Path, title: str) -> Path:
    """Horizontal bars of images/s, engine next to baseline, log scale (rates span 10^1-10^6)."""
    import matplotlib  # deferred: picks the Agg backend only when drawing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after the Agg backend is picked

    timed = [r for r in rows if r.get("images_per_s")]
    labels = [f"{r['stage']}: {_short_name(r['backend'])}" for r in timed]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * max(len(timed), 1)))
    pos = list(range(len(timed)))
    ax.barh([p + 0.2 for p in pos], [r["images_per_s"] for r in timed], 0.4, label="engine")
    base = [r.get("baseline_images_per_s") or 0 for r in timed]
    ax.barh([p - 0.2 for p in pos], base, 0.4, label="baseline")
    ax.set_yticks(pos, labels, fontsize=8)
    ax.invert_yaxis()
    if timed:
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no stage produced a rate", ha="center", transform=ax.transAxes)
    ax.set_xlabel("images (samples) per second")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(rows: list[dict], out_dir: Path, command: str, settings: dict) -> dict:
    """Write `bench.json` (rows, hardware, settings, date) and `bench.png`; return the payload."""
    out_dir = Path(out_dir)
    hw = {**hardware(), "cpu_model": cpu_model()}
    payload = {
        "format": BENCH_FORMAT,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command,
        "settings": settings,
        "hardware": hw,
        "columns": list(COLUMNS),
        "rows": rows,
    }
    write_json(out_dir / "bench.json", payload)
    device = hw["gpu"] or f"CPU only ({hw['cpu_model']}, {hw['cpu_cores']} cores)"
    plot(rows, out_dir / "bench.png", f"engine bench on {device}")
    return payload
