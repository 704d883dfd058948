"""Bad input: damaged JPEGs inside a batch, unreadable samples, folders that are not shards."""

from __future__ import annotations

import json
import logging
import tarfile

import pytest
import torch
from test_decode_support import sample_jpegs, write_shards

import shards.decode as decode
from engine.errors import UserError
from shards.decode import make_loader

needs_dali = pytest.mark.skipif(not decode.HAS_DALI, reason="DALI is not installed")
N, BROKEN = 12, 6  # sample 6 sits in the middle of the second batch of 4


@pytest.fixture(scope="module")
def with_truncated(tmp_path_factory):
    jpegs = sample_jpegs(N)
    jpegs[BROKEN] = jpegs[BROKEN][: len(jpegs[BROKEN]) * 6 // 10]  # cut mid-scan
    out = tmp_path_factory.mktemp("truncated")
    write_shards(out, jpegs, shard_size=5, labels=[0] * N)
    return out


def collect(loader):
    batches = list(loader)
    return torch.cat([b.images for b in batches], 1), torch.cat([b.index for b in batches])


@needs_dali
def test_broken_jpeg_in_dali_batch_falls_back_to_pillow(with_truncated, caplog):
    loader = make_loader(with_truncated, backend="dali-cpu", batch_size=4, views=2, workers=2)
    with caplog.at_level(logging.WARNING, logger="shards.decode.dali"):
        images, index = collect(loader)
    assert index.tolist() == list(range(N))  # nothing lost, nothing duplicated
    assert loader.fallback_keys == [f"img_{BROKEN:05d}"]
    warnings = [r.getMessage() for r in caplog.records if "Pillow" in r.getMessage()]
    assert len(warnings) == 1 and f"img_{BROKEN:05d}" in warnings[0]
    pil, _ = collect(make_loader(with_truncated, backend="pil", batch_size=4, views=2, workers=0))
    # The failed batch (samples 4..7) was decoded by Pillow: equal to the pil backend exactly.
    assert torch.equal(images[:, 4:8], pil[:, 4:8])
    # The tolerant decode kept the top of the image: not a blank placeholder.
    assert images[0, BROKEN, :, :50].std() > 0.1
    # The other batches went through DALI: within DALI's tolerance, not bit-equal.
    rest = torch.cat([images[:, :4], images[:, 8:]], 1) - torch.cat([pil[:, :4], pil[:, 8:]], 1)
    assert 0 < rest.abs().max() <= 0.08


def test_broken_jpeg_in_pil_backend_is_decoded_tolerantly(with_truncated, caplog):
    with caplog.at_level(logging.WARNING, logger="shards.decode.pil"):
        images, index = collect(make_loader(with_truncated, backend="pil", batch_size=4, workers=0))
    assert index.tolist() == list(range(N))
    assert any(f"img_{BROKEN:05d}" in r.getMessage() for r in caplog.records)
    assert images[0, BROKEN, :, :50].std() > 0.1


@pytest.mark.parametrize("backend", ["pil", pytest.param("dali-cpu", marks=needs_dali)])
def test_undecodable_sample_is_a_user_error_naming_the_key(tmp_path, backend):
    jpegs = sample_jpegs(3)
    jpegs[1] = b"<html>not an image</html>"
    write_shards(tmp_path, jpegs, shard_size=5, labels=[0, 0, 0])
    with pytest.raises(UserError, match="img_00001"):
        list(
            make_loader(
                tmp_path, backend=backend, batch_size=4, workers=0 if backend == "pil" else 1
            )
        )


def test_folder_without_manifest_is_a_user_error(tmp_path):
    write_shards(tmp_path, sample_jpegs(2), shard_size=5, labels=[0, 1])
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(UserError, match=f"no manifest.json in {tmp_path}"):
        make_loader(tmp_path, backend="pil")
    with pytest.raises(UserError, match="not a folder of engine shards"):
        make_loader(tmp_path / "shard-000000.tar", backend="pil")


def test_foreign_manifest_is_a_user_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "someone-else/2"}))
    with pytest.raises(UserError, match="manifest.json is not an engine.shards/1 manifest"):
        make_loader(tmp_path, backend="pil")


def test_non_tar_shard_is_a_user_error_naming_the_file(tmp_path):
    write_shards(tmp_path, sample_jpegs(2), shard_size=5, labels=[0, 1], with_index=False)
    (tmp_path / "shard-000000.tar").write_bytes(b"PK\x03\x04 a zip file, not a tar" * 40)
    with pytest.raises(UserError, match="shard-000000.tar is not a tar file"):
        make_loader(tmp_path, backend="pil")


def test_truncated_tar_is_a_user_error_naming_the_file(tmp_path):
    write_shards(tmp_path, sample_jpegs(4), shard_size=5, labels=[0] * 4)
    tar = tmp_path / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(UserError, match="shard-000000.tar is truncated"):
        make_loader(tmp_path, backend="pil")
    (tmp_path / "shard-000000.idx").unlink()  # without the index, tarfile finds the damage
    with pytest.raises(UserError, match="shard-000000.tar"):
        make_loader(tmp_path, backend="pil")


def test_count_mismatch_and_missing_jpg_are_user_errors(tmp_path):
    manifest = write_shards(tmp_path, sample_jpegs(3), shard_size=5, labels=[0] * 3)
    manifest["shards"][0]["count"] = 4
    manifest["num_samples"] = 4
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="holds 3 samples but the manifest says 4"):
        make_loader(tmp_path, backend="pil")
    other = tmp_path / "other"
    other.mkdir()
    with tarfile.open(other / "shard-000000.tar", "w") as tar:
        tar.add(tmp_path / "manifest.json", arcname="a.json")
    manifest.update(shards=[{"name": "shard-000000.tar", "index": "", "count": 1}], num_samples=1)
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="sample 'a' in .*shard-000000.tar has no 'jpg' member"):
        make_loader(other, backend="pil")


@needs_dali
def test_dali_failing_on_good_data_stops_after_a_few_batches(tmp_path, monkeypatch):
    from shards.decode import dali

    write_shards(tmp_path, sample_jpegs(20), shard_size=20, labels=[0] * 20)
    good_columns = dali.geometry_columns

    def out_of_bounds(geo):
        columns = good_columns(geo)
        columns[2] = columns[2] + 10_000  # eval crop starts past the image
        return columns

    monkeypatch.setattr(dali, "geometry_columns", out_of_bounds)
    loader = make_loader(tmp_path, backend="dali-cpu", batch_size=4, workers=1)
    seen = []
    with pytest.raises(RuntimeError, match="3 batches in a row"):
        for batch in loader:
            seen += batch.index.tolist()
    assert seen == list(range(8))  # the first two were still decoded by Pillow, not lost
    assert loader.fallback_keys == []
