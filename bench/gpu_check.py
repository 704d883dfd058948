"""GPU acceptance check: every GPU-side target of the engine, measured in one run.

    python -m bench.gpu_check                      # one H100/H200: <= 8 minutes
    python -m bench.gpu_check --dry-run            # tiny sizes on the CPU, seconds (CI)
    python -m bench.gpu_check --parts trunk,train  # some parts only

Parts, in order (the features pass, the only one that needs DALI, last): `cuda` (stops the
check when no GPU is visible), `trunk` (eager and compiled, batch 256 and 1024), `train` (tail
k=2, head-only), `screen` (one round at 300k x 1500), `memory` (the token plan at 300k and one
fine-tune epoch over 300k zero tokens), `pytest` (`pytest -m gpu`), `features` (>= 32k
generated images through DALI `mixed`, next to webdataset + Pillow + open_clip).

Each line is a value next to its target. The JSON (`--out`) is rewritten after every part, so
a run cut short still reports what it finished; the table is printed at the end. Exit status:
0 when every target is met (in a dry run: when no part failed to run), 1 otherwise, 2 when a
full check finds no CUDA device.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
import traceback
from pathlib import Path

from bench import gpu_check_data as data_parts
from bench import gpu_check_parts as parts
from bench.gpu_check_parts import CheckSizes, check_line
from engine.jsonfile import write_json

log = logging.getLogger(__name__)

PARTS = {
    "cuda": parts.part_cuda,
    "trunk": parts.part_trunk,
    "train": parts.part_train,
    "screen": parts.part_screen,
    "memory": data_parts.part_memory,
    "pytest": parts.part_pytest,
    "features": data_parts.part_features,
}
TIME_LIMIT_S = 8 * 60  # the whole check on one H100/H200
DEFAULT_OUT = Path("work") / "gpu_check.json"


def run_part(name: str, sizes: CheckSizes) -> list[dict]:
    """A part's lines, each with the part's seconds; an exception becomes one failed line."""
    start = time.perf_counter()
    try:
        lines = PARTS[name](sizes)
    except Exception as err:  # noqa: BLE001 -- one broken part must not hide the others
        log.error("part %s failed:\n%s", name, traceback.format_exc())
        lines = [check_line(name, "part ran", 0.0, "bool", 1.0,
                            note=f"error: {type(err).__name__}: {err}")]  # fmt: skip
    seconds = round(time.perf_counter() - start, 2)
    for line in lines:
        line["seconds"] = seconds
    return lines


def _header(sizes: CheckSizes, argv: list[str]) -> dict:
    import torch

    return {
        "check": "engine GPU acceptance",
        "dry_run": sizes.dry,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join(["python -m bench.gpu_check", *argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def run_check(sizes: CheckSizes, out: Path, names: list[str], argv: list[str] = ()) -> dict:
    """Run `names` in order, rewriting `out` after each part; returns the report."""
    report = {**_header(sizes, list(argv)), "lines": [], "complete": False}
    start = time.perf_counter()
    for name in names:
        log.info("gpu check: part %s ...", name)
        report["lines"] += run_part(name, sizes)
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json(out, report)
        if name == "cuda" and not sizes.dry and report["lines"][0]["passed"] is False:
            log.error("no CUDA device: %s", report["lines"][0]["note"])
            report["no_cuda"] = True
            break
    total = check_line("total", "whole check", report["seconds"], "s", TIME_LIMIT_S, op="<=")
    report["lines"].append({**total, "seconds": report["seconds"]})
    report["complete"] = not report.get("no_cuda", False)
    write_json(out, report)
    return report


def format_report(report: dict) -> str:
    """The fixed-width table of every line: part, what, value, target, verdict, note."""
    from bench.common import format_table

    verdict = {True: "ok", False: "FAIL", None: ""}
    rows = [
        {
            "part": ln["part"], "line": ln["name"],
            "value": "" if ln["value"] is None else f"{ln['value']:,.2f} {ln['unit']}",
            "target": "" if ln["target"] is None else f"{ln['op']} {ln['target']:,}",
            "verdict": verdict[ln["passed"]], "note": ln["note"] or "",
        }
        for ln in report["lines"]
    ]  # fmt: skip
    title = (
        f"{report['check']} on {report['device']} ({'dry run' if report['dry_run'] else 'full'})"
    )
    return title + "\n" + format_table(rows, ["part", "line", "value", "target", "verdict", "note"])


def exit_status(report: dict) -> int:
    if report.get("no_cuda"):
        return 2
    if report["dry_run"]:  # tiny sizes: targets are shown, only a part that broke fails
        broken = [ln for ln in report["lines"] if ln["name"] == "part ran"]
        return 1 if broken else 0
    return 1 if any(ln["passed"] is False for ln in report["lines"]) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    names = [n for n in args.parts.split(",") if n]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; valid: {','.join(PARTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sizes = CheckSizes.dry_run() if args.dry_run else CheckSizes()
    report = run_check(sizes, args.out, names, argv)
    print(format_report(report))
    print(f"report -> {args.out}")
    return exit_status(report)


if __name__ == "__main__":
    sys.exit(main())
