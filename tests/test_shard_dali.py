"""DALI's own webdataset reader and decoder on our shards (CPU pipeline, no GPU needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shards.config import ShardConfig
from shards.reader import iter_samples, shard_files
from shards.sample_data import make_sample_dataset
from shards.writer import pack

dali = pytest.importorskip("nvidia.dali")
fn, types = dali.fn, dali.types

BATCH = 8
# Measured: DALI's CPU decoder (libjpeg-turbo) and Pillow give identical pixels on every
# stored JPEG here (max abs diff 0); allow 1 level for a different libjpeg-turbo build.
MAX_ABS_DIFF = 1


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    info = make_sample_dataset(root, n_classes=4, max_per_class=10, min_per_class=2, n_test=4)
    out = root / "shards"
    pack(info.train_dir, out, ShardConfig(shard_size=16, short_side=256, workers=1))
    return out


def _read_all_with_dali(out):
    files = shard_files(out)

    @dali.pipeline_def(batch_size=BATCH, num_threads=1, device_id=None)
    def pipeline():
        jpg, cls, meta = fn.readers.webdataset(
            paths=[str(f.tar) for f in files],
            index_paths=[str(f.idx) for f in files],
            ext=["jpg", "cls", "json"],
            missing_component_behavior="error",
            random_shuffle=False,
            name="reader",
        )
        return jpg, fn.decoders.image(jpg, device="cpu", output_type=types.RGB), cls, meta

    pipe = pipeline()
    pipe.build()
    n = pipe.reader_meta("reader")["epoch_size"]
    rows = []
    while len(rows) < n:  # the last batch wraps into the next epoch: keep the first n
        jpgs, images, classes, metas = pipe.run()
        for j in range(len(jpgs)):
            rows.append((np.array(jpgs.at(j)).tobytes(), np.array(images.at(j)),
                         int(np.array(classes.at(j)).tobytes()), np.array(metas.at(j)).tobytes()))  # fmt: skip
    return n, rows[:n]


def test_dali_reads_every_sample_once_with_its_label_and_decodes_like_pillow(packed):
    n, rows = _read_all_with_dali(packed)
    ours = list(iter_samples(packed))
    assert n == len(ours)
    assert [r[0] for r in rows] == [s.jpeg for s in ours]  # every sample, once, in order
    assert [r[2] for r in rows] == [s.label for s in ours]
    worst = 0
    for jpeg, image, _, _ in rows:
        reference = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        assert image.shape == reference.shape
        worst = max(worst, int(np.abs(image.astype(int) - reference).max()))
    assert worst <= MAX_ABS_DIFF
