"""The GPU host's packs, made from the lock: what the host lacks, and nothing it has.

The host (Python 3.12, torch, numpy, timm, pytest, ... : requirements/gpu-host.txt) gets two
packs of wheels, each at the version CI tested (requirements/runtime-py312.txt, locked with
hashes):

    slim  every runtime package the engine needs beyond the host's (open_clip, zarr, webdataset,
          ...), <= 8 MiB: it travels with the repository in the first call.
    dali  DALI for CUDA 13 and its codecs, in parts of <= 56 MiB of whole wheels, each part
          installable on its own as it arrives (a wheel larger than a part is split in pieces
          that are joined when the last one is there).

faiss-cpu is never shipped: on CUDA the screening kNN runs in torch. `record` (part of
`make lock`, needs PyPI) writes requirements/wheels-py312.tsv: per locked package the cp312
manylinux x86-64 wheel, its size and sha256, so that the tests check the packs offline.

    python -m bench.gpu_pack record                 # make lock
    python -m bench.gpu_pack names slim|dali        # package==version lines
    python -m bench.gpu_pack parts dali             # the part plan: part, file, size
    python -m bench.gpu_pack verify slim .whl/slim  # sha256 as locked, size limit (slim)
    python -m bench.gpu_pack split .whl/dali-wheels .whl/dali   # part-1/, part-2/, ...
    python -m bench.gpu_pack join /tmp/engine-dali  # there: wheels now whole, not yet listed
    python -m bench.gpu_pack namespace /tmp/site    # there: `nvidia` spans the host's too
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
RUNTIME_LOCK = REQ / "runtime-py312.txt"  # what `pip install engine` needs on Python 3.12
FULL_LOCK = REQ / "lock-py312-cu13.txt"  # runtime + dev + DALI for CUDA 13
HOST_LIST = REQ / "gpu-host.txt"
WHEELS = REQ / "wheels-py312.tsv"
ENGINE = "engine (pyproject.toml)"
NEVER_SHIPPED = {"faiss-cpu": "CUDA runs the kNN in torch; faiss is the CPU's fallback"}
DALI_ROOT = "nvidia-dali-cuda130"
SLIM_LIMIT = 8 * 2**20  # travels with the repository in call 1
PART_LIMIT = 56 * 2**20  # one part per call, beside the repository, under 64 MiB a call
# The host's tags: CPython 3.12 on x86-64 Linux, glibc 2.28 or older manylinux; or pure Python.
PLATFORMS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)) + (
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")  # fmt: skip
INDEX = "https://pypi.org/simple/{}/"


@dataclass
class Pin:
    """One locked package: its version, the sha256 of every file of it, who needs it."""

    version: str
    hashes: set[str] = field(default_factory=set)
    via: set[str] = field(default_factory=set)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: Path) -> dict[str, Pin]:
    """`name==version` entries of a `uv pip compile --generate-hashes` file with their hashes
    and their `# via` parents (`engine (pyproject.toml)` for the engine's own requirements)."""
    pins: dict[str, Pin] = {}
    current, in_via = None, False
    for line in Path(path).read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", line):
            current, in_via = normalize(m[1]), False
            pins[current] = Pin(m[2])
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current].hashes.add(h[1])
        elif current and line.strip().startswith("# via"):
            in_via = True
            rest = line.strip()[len("# via") :].strip()
            if rest:
                pins[current].via.add(rest if rest == ENGINE else normalize(rest))
        elif current and in_via and line.strip().startswith("#   "):
            parent = line.strip()[1:].strip()
            if not parent.startswith("-c ") and not parent.startswith("-r "):
                pins[current].via.add(parent if parent == ENGINE else normalize(parent))
    return pins


def host_names(path: Path = HOST_LIST) -> set[str]:
    """Names of the packages the host has (requirements/gpu-host.txt)."""
    names = set()
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalize(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]))
    return names


def needed_beyond(pins: dict[str, Pin], roots: set[str], have: set[str]) -> list[str]:
    """Packages reachable from `roots` through requirement edges, not crossing `have`: a
    package the host has brings its own requirements with it, so none below it is needed."""
    children: dict[str, set[str]] = {}
    for name, pin in pins.items():
        for parent in pin.via:
            children.setdefault(parent, set()).add(name)
    todo, seen = sorted(roots), set()
    while todo:
        name = todo.pop()
        if name in seen or name in have or name in NEVER_SHIPPED:
            continue
        seen.add(name)
        todo += sorted(children.get(name, ()))
    return sorted(seen)


def slim_names(runtime: dict[str, Pin] | None = None, have: set[str] | None = None) -> list[str]:
    """The slim pack: every runtime requirement the host lacks, their own requirements too."""
    runtime = parse_lock(RUNTIME_LOCK) if runtime is None else runtime
    have = host_names() if have is None else have
    roots = {n for n, p in runtime.items() if ENGINE in p.via}
    return needed_beyond(runtime, roots, have)


def dali_names(full: dict[str, Pin] | None = None, have: set[str] | None = None) -> list[str]:
    """DALI and what it needs beyond the host's packages and the slim pack."""
    full = parse_lock(FULL_LOCK) if full is None else full
    have = (host_names() if have is None else have) | set(slim_names(have=have))
    return needed_beyond(full, {DALI_ROOT}, have)


def host_tags() -> set:
    """Every wheel tag the host's Python 3.12 on x86-64 Linux installs."""
    from packaging import tags

    cpython = tags.cpython_tags((3, 12), platforms=PLATFORMS)
    return set(cpython) | set(tags.compatible_tags((3, 12), "cp312", PLATFORMS))


def compatible(filename: str, supported: set | None = None) -> bool:
    """Whether a wheel installs on the host: cp312 (or abi3, or pure Python), x86-64 Linux."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        wheel_tags = parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return False
    return bool(set(wheel_tags) & (host_tags() if supported is None else supported))


def pick_wheel(files: list[dict], version: str, hashes: set[str]) -> dict | None:
    """The host's wheel among an index's files of `version` whose sha256 the lock holds."""
    supported = host_tags()
    for f in files:
        name = f["filename"]
        if f"-{version}-" not in name and f"-{version.replace('-', '_')}-" not in name:
            continue
        if compatible(name, supported) and f["hashes"].get("sha256") in hashes:
            return f
    return None


def record(out: Path = WHEELS) -> int:
    """Write the wheel record for every runtime and DALI package (PyPI's JSON index)."""
    runtime, full = parse_lock(RUNTIME_LOCK), parse_lock(FULL_LOCK)
    groups = dict.fromkeys(runtime, "runtime")
    groups.update(dict.fromkeys(slim_names(runtime), "slim"))
    groups.update(dict.fromkeys(dali_names(full), "dali"))
    rows, missing = ["name\tversion\tgroup\tfilename\tsize\tsha256"], []
    for name, group in sorted(groups.items()):
        pin = runtime.get(name) or full[name]
        request = urllib.request.Request(
            INDEX.format(name), headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
        wheel = pick_wheel(files, pin.version, pin.hashes)
        if wheel is None:
            missing.append(f"{name}=={pin.version}")
            continue
        rows.append(f"{name}\t{pin.version}\t{group}\t{wheel['filename']}\t{wheel['size']}\t"
                    f"{wheel['hashes']['sha256']}")  # fmt: skip
    out.write_text("\n".join(rows) + "\n")
    if missing:
        print(f"no cp312 manylinux x86-64 wheel for: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{len(rows) - 1} wheels -> {out}")
    return 0


def read_record(path: Path = WHEELS) -> list[dict]:
    lines = Path(path).read_text().splitlines()
    head = lines[0].split("\t")
    rows = [dict(zip(head, line.split("\t"), strict=True)) for line in lines[1:] if line]
    for row in rows:
        row["size"] = int(row["size"])
    return rows


def plan_parts(rows: list[dict], limit: int | None = None) -> list[list[tuple[str, int, int]]]:
    """Wheels into parts of at most `limit` bytes: (filename, start, end) byte ranges, whole
    wheels where they fit (largest first, first part with room), else a wheel's pieces in
    parts of their own, one after the other. `limit` defaults to PART_LIMIT."""
    limit = PART_LIMIT if limit is None else limit
    parts: list[list[tuple[str, int, int]]] = []
    room: list[int] = []
    for row in sorted(rows, key=lambda r: -r["size"]):
        name, size = row["filename"], row["size"]
        if size > limit:
            for start in range(0, size, limit):
                parts.append([(name, start, min(size, start + limit))])
                room.append(limit - (min(size, start + limit) - start))
            continue
        for i, free in enumerate(room):
            if free >= size:
                parts[i].append((name, 0, size))
                room[i] -= size
                break
        else:
            parts.append([(name, 0, size)])
            room.append(limit - size)
    return parts


def verify(group: str, folder: Path) -> int:
    """Every wheel of `group` in `folder`, byte for byte as recorded (so as locked), and the
    slim pack within SLIM_LIMIT."""
    rows = [r for r in read_record() if r["group"] == group]
    problems = []
    for row in rows:
        path = Path(folder) / row["filename"]
        if not path.is_file():
            problems.append(f"missing {row['filename']}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != row["sha256"]:
            problems.append(f"{row['filename']}: sha256 differs from the lock")
    total = sum(r["size"] for r in rows)
    if group == "slim" and total > SLIM_LIMIT:
        problems.append(f"slim pack {total / 2**20:.1f} MiB > {SLIM_LIMIT / 2**20:.0f} MiB")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{group}: {len(rows)} wheels, {total / 2**20:.1f} MiB" + (" FAILED" * bool(problems)))
    return 1 if problems else 0


def split(wheels: Path, out: Path) -> int:
    """The DALI wheels into part-1/, part-2/, ... per `plan_parts`; a wheel larger than a part
    becomes pieces named `WHEEL.piece-START-END-SIZE`. Each part holds PARTS (their count)."""
    rows = [r for r in read_record() if r["group"] == "dali"]
    sizes = {r["filename"]: r["size"] for r in rows}
    parts = plan_parts(rows)
    for k, part in enumerate(parts, 1):
        folder = Path(out) / f"part-{k}"
        folder.mkdir(parents=True)
        (folder / "PARTS").write_text(f"{len(parts)}\n")
        for name, start, end in part:
            if (start, end) == (0, sizes[name]):
                shutil.copyfile(Path(wheels) / name, folder / name)
                continue
            with open(Path(wheels) / name, "rb") as src:
                src.seek(start)
                piece = folder / f"{name}.piece-{start}-{end}-{sizes[name]}"
                piece.write_bytes(src.read(end - start))
    return 0


def join(store: Path) -> list[Path]:
    """Wheels in `store` that are whole now (pieces joined once the last one is there) and not
    yet handed out by an earlier call: what to install after this part."""
    store = Path(store)
    pieces: dict[str, list[tuple[int, int, int, Path]]] = {}
    for path in store.glob("*.piece-*"):
        name, span = path.name.rsplit(".piece-", 1)
        start, end, size = (int(x) for x in span.split("-"))
        pieces.setdefault(name, []).append((start, end, size, path))
    for name, spans in pieces.items():
        spans.sort()
        whole = spans[0][0] == 0 and spans[-1][1] == spans[0][2]
        whole = whole and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        if whole:
            with open(store / name, "wb") as dst:
                for *_, path in spans:
                    dst.write(path.read_bytes())
            for *_, path in spans:
                path.unlink()
    done_list = store / ".handed-out"
    done = set(done_list.read_text().split()) if done_list.exists() else set()
    ready = sorted(p for p in store.glob("*.whl") if p.name not in done)
    done_list.write_text("\n".join(sorted(done | {p.name for p in ready})) + "\n")
    return ready


NAMESPACE_INIT = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"


def open_namespace(site: Path) -> bool:
    """Make `site/nvidia` extend over every other `nvidia` folder on sys.path.

    Some DALI codec wheels (nvjpeg2k, nvtiff) ship an empty `nvidia/__init__.py`: installed
    into a folder ahead of the host's site-packages, it turns `nvidia` into a regular package
    that hides the host's `nvidia.cu13`, `nvidia.cudnn`, ... The pkgutil form (what
    nvimgcodec's wheel ships) keeps every portion visible. Returns whether it rewrote it."""
    init = Path(site) / "nvidia" / "__init__.py"
    if not init.exists() or init.read_text() == NAMESPACE_INIT:
        return False
    init.write_text(NAMESPACE_INIT)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = ("record", "names", "parts", "verify", "split", "join", "namespace")
    parser.add_argument("verb", choices=verbs)
    parser.add_argument("args", nargs="*")
    args = parser.parse_args(argv)
    if args.verb == "record":
        return record()
    if args.verb == "verify":
        return verify(args.args[0], Path(args.args[1]))
    if args.verb == "split":
        return split(Path(args.args[0]), Path(args.args[1]))
    if args.verb == "join":
        for path in join(Path(args.args[0])):
            print(path)
        return 0
    if args.verb == "namespace":
        open_namespace(Path(args.args[0]))
        return 0
    rows = [r for r in read_record() if r["group"] == args.args[0]]
    if args.verb == "names":
        print("\n".join(f"{r['name']}=={r['version']}" for r in rows))
        return 0
    for k, part in enumerate(plan_parts(rows), 1):
        for name, start, end in part:
            print(f"{k}\t{name}\t{start}\t{end}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
