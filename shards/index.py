"""DALI index files (`.idx`) beside each shard, in the format of DALI's own `wds2idx`.

Format v1.2 (nvidia/DALI `tools/wds2idx.py`): a header line `v1.2 <samples>`, then one
line per sample listing, for each of its tar members, `<ext> <data offset> <size> <name>`
separated by spaces. Members are grouped into samples as DALI does: consecutive members
with the same name up to the first dot of the basename. Keys never contain spaces or dots
(shards.keys), so the space-separated format is unambiguous.

    write_dali_index(Path("shard-000000.tar"), Path("shard-000000.idx"))
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from shards.format import split_name

INDEX_VERSION = "v1.2"


def index_lines(tar_path: Path) -> list[str]:
    """The index file's lines (without newlines) for one tar."""
    samples: list[list[str]] = []
    last_sample = None
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isreg():
                continue
            sample, ext = split_name(member.name)
            if not sample or sample.endswith("/"):  # hidden files, as wds2idx skips them
                continue
            part = f"{ext} {member.offset_data} {member.size} {member.name}"
            if sample != last_sample:
                samples.append([part])
                last_sample = sample
            else:
                samples[-1].append(part)
    if not samples:
        raise ValueError(f"no samples in {tar_path}: DALI cannot index an empty shard")
    return [f"{INDEX_VERSION} {len(samples)}", *(" ".join(parts) for parts in samples)]


def write_dali_index(tar_path: Path, idx_path: Path) -> int:
    """Write the DALI index of `tar_path` to `idx_path`; returns the number of samples."""
    lines = index_lines(tar_path)
    Path(idx_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1
