"""GPU acceptance check: every GPU-side target of the engine, measured in one run.

    python -u -m bench.gpu_check                   # one H100/H200, every part
    python -u -m bench.gpu_check --dry-run         # tiny sizes on the CPU, seconds (CI)
    python -u -m bench.gpu_check --parts trunk,train  # some parts only

Parts, in order: `cuda` (stops the check when no GPU is visible), `trunk` (eager and compiled,
batch 256 and 1024, one runner and one static-shape graph per batch size), `train` (tail k=2,
head-only), `screen` (one round at 300k x 1500, without the folder-mixture stage), `memory` (the token plan at 300k and one
fine-tune epoch over 300k zero tokens), `pytest` (`pytest -m gpu`), `features` (the whole pass
in steady state over >= 131k images decoded by torchvision's nvJPEG, with decode-only,
trunk-only and store-write rates beside it and the webdataset + Pillow + open_clip baseline),
`dali` (the same pass through DALI `mixed`, the only part that needs DALI's wheels),
`mixture` (the folder-mixture stage alone at 300k x 1500).

Each line is a value next to its target. The JSON (`--out`; default `$OUT/gpu_check.json` when
OUT is set, as on the lent GPU host, where only `$OUT` comes back) is rewritten and the table
printed after every part, so a run cut short still reports what it finished. Exit status: 0
when every target is met (in a dry run, where the sizes are tiny, when every line with a target
has a value), 1 otherwise (a line with a target and no value, a skipped one, fails too), 2
when a full check finds no CUDA device.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from bench import gpu_check_data as data_parts
from bench import gpu_check_parts as parts
from bench.common import format_table
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
    "dali": data_parts.part_dali,
    "mixture": parts.part_mixture,
}
TIME_LIMIT_S = 8 * 60  # the whole check on one H100/H200


def default_out() -> Path:
    """`$OUT/gpu_check.json` where OUT is set (the lent host returns only that folder), else
    work/gpu_check.json."""
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else Path("work") / "gpu_check.json"


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


def apply_engine_numerics() -> dict | None:
    """The numerics the engine's commands run with (TF32 where the tolerance allows it,
    deterministic kernels: heads.numerics), set before the first CUDA kernel so that every part
    measures what `engine train` / `engine screen` run; their flags, or None where the module
    is absent."""
    try:
        from heads.numerics import apply_numerics  # deferred: ImportError-guarded (older engines)
    except ImportError:
        return None
    return apply_numerics()


def _header(sizes: CheckSizes, argv: list[str]) -> dict:

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
    numerics = apply_engine_numerics()
    report = {**_header(sizes, list(argv)), "numerics": numerics, "lines": [], "complete": False}
    start = time.perf_counter()
    for name in names:
        log.info("gpu check: part %s ...", name)
        report["lines"] += run_part(name, sizes)
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json(out, report)
        print(format_report(report), flush=True)  # a run cut at a time limit keeps its table
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


def unmet(report: dict) -> list[dict]:
    """Lines that fail the check: a part that broke, a target with no value (a skipped line
    is not a pass), and in a full run a value that misses its target. A dry run's values come
    from tiny sizes on a CPU, so their comparison with the GPU targets is shown, not enforced."""
    bad = []
    for ln in report["lines"]:
        broken = ln["name"] == "part ran" and ln["passed"] is False
        skipped = ln["target"] is not None and ln["value"] is None
        missed = ln["passed"] is False and not report["dry_run"]
        if broken or skipped or missed:
            bad.append(ln)
    return bad


def exit_status(report: dict) -> int:
    if report.get("no_cuda"):
        return 2
    return 1 if unmet(report) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON report (default: $OUT/gpu_check.json when OUT is set, else work/gpu_check.json)",
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    out = args.out or default_out()
    names = [n for n in args.parts.split(",") if n]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; valid: {','.join(PARTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sizes = CheckSizes.dry_run() if args.dry_run else CheckSizes()
    report = run_check(sizes, out, names, argv)
    print(format_report(report))
    for ln in unmet(report):
        print(f"unmet: {ln['part']}: {ln['name']} ({ln['note'] or 'no value'})")
    print(f"report -> {out}", flush=True)
    return exit_status(report)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each line leaves at once, even into a pipe
    sys.exit(main())
