"""The one switch for Pillow's process-wide `LOAD_TRUNCATED_IMAGES` flag.

Pillow reads the module flag at load time, so it is set only around a tolerant decode (the
repair of a truncated file, the fallback decode of a damaged sample) and strict decoding,
which detects the damage, stays the default everywhere else. A lock keeps two threads from
restoring each other's value.

    with load_truncated_images():
        img = Image.open(io.BytesIO(data)).convert("RGB")
"""

from __future__ import annotations

import contextlib
import threading

from PIL import ImageFile

_LOCK = threading.Lock()


@contextlib.contextmanager
def load_truncated_images(enabled: bool = True):
    """Set `ImageFile.LOAD_TRUNCATED_IMAGES` to `enabled` inside the block, then restore it."""
    with _LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = enabled
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
