"""DALI index files (`.idx`) beside each shard, in the format of DALI's own `wds2idx`.

Format v1.2 (nvidia/DALI `tools/wds2idx.py`): a header line `v1.2 <samples>`, then one
line per sample listing, for each of its tar members, `<ext> <data offset> <size> <name>`
separated by spaces. Members are grouped into samples as DALI does: consecutive members
with the same name up to the first dot of the basename. Keys never contain spaces or dots
(shards.keys), so the space-separated format is unambiguous.

    write_dali_index(Path("shard-000000.tar"), Path("shard-000000.idx"))
"""

from __future__ import annotations

from pathlib import Path

from shards.format import scan_tar

INDEX_VERSION = "v1.2"


def index_lines(tar_path: Path) -> list[str]:
    """The index file's lines (without newlines) for one tar, from the one tar-header walk
    (`shards.format.scan_tar`); a member's name is its key, a dot and its extension."""
    samples = scan_tar(Path(tar_path))
    if not samples:
        raise ValueError(f"no samples in {tar_path}: DALI cannot index an empty shard")
    lines = [
        " ".join(f"{ext} {offset} {size} {key}.{ext}" for ext, (offset, size) in members.items())
        for key, members in samples
    ]
    return [f"{INDEX_VERSION} {len(samples)}", *lines]


def write_dali_index(tar_path: Path, idx_path: Path) -> int:
    """Write the DALI index of `tar_path` to `idx_path`; returns the number of samples."""
    lines = index_lines(tar_path)
    Path(idx_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1
