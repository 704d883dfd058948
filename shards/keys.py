"""Sample keys: unique, stable, and safe for WebDataset and DALI.

Both WebDataset and DALI split a tar member name at the FIRST dot of its basename
(`img.v2.jpg` would become key `img`, extension `v2.jpg`), and DALI's index file is
space-separated. A key is therefore restricted to `[A-Za-z0-9_-]`: a readable slug of the
relative path plus a hash of the exact path, so two paths that slug alike
(`a b.jpg`, `a_b.jpg`, `a.b.jpg`) still get different keys.

    make_key("0001/img.v2.JPG")  # -> "0001_img_v2_JPG-3b5f0d5e9a1c"
"""

from __future__ import annotations

import hashlib
import re

# 48 bits of hash: two different paths with the same slug AND hash are beyond reach
# (the slug already separates almost all of them); the writer still checks uniqueness.
HASH_CHARS = 12
# Keeps tar member names well inside the 100-byte ustar limit (key + ".json").
MAX_SLUG = 80

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def make_key(relpath: str) -> str:
    """Key for the file at `relpath` (POSIX separators, relative to the source folder).

    Args:
        relpath: path relative to the shard source, e.g. "0042/photo 1.jpeg".

    Returns:
        A dot-free, space-free ASCII key, the same for the same path on every run.
    """
    slug = _UNSAFE.sub("_", relpath).strip("_")[:MAX_SLUG] or "x"
    # The name's bytes as the OS gave them: a name that is not UTF-8 (surrogate escapes) too.
    digest = hashlib.sha1(relpath.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_CHARS]
    return f"{slug}-{digest}"
