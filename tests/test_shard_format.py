"""The shard-access layer (shards.format): manifest checked once, one `.idx` parser, mmap bytes,
sample metadata with sizes, and one-line errors for broken manifests."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from click.testing import CliRunner
from PIL import Image
from test_decode_support import SIZES, make_jpeg, write_shards

import shards.index
from engine.cli import main
from engine.errors import UserError
from engine.outputs import claim_output_dir
from features.meta import MetaCache
from shards import format as fmt
from shards.decode import make_loader
from shards.decode.catalog import load_catalog
from shards.manifest import SHARDS_OUTPUT
from shards.reader import iter_samples

N, SHARD_SIZE = 9, 4


@pytest.fixture(scope="module")
def jpegs():
    return [make_jpeg(*SIZES[i % len(SIZES)], seed=i) for i in range(N)]


@pytest.fixture(scope="module")
def packed(tmp_path_factory, jpegs):
    out = tmp_path_factory.mktemp("packed")
    write_shards(out, jpegs, shard_size=SHARD_SIZE, labels=[i % 2 for i in range(N)])
    return out


def tar_members(tar) -> dict[str, bytes]:
    """{member name: bytes} of a tar, read with tarfile (the reference)."""
    with tarfile.open(tar) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive if m.isreg()}


def test_mmap_bytes_equal_tar_member_bytes(packed, jpegs):
    catalog = load_catalog(packed)
    reference = {}
    for entry in fmt.open_shards(packed).entries:
        reference.update(tar_members(entry.tar))
    expected = [reference[f"{key}.jpg"] for key in catalog.keys]
    assert expected == jpegs  # the fixture wrote them in this order
    assert [catalog.read(i) for i in range(N)] == expected
    views = catalog.jpeg_views(range(N))
    assert [v.tobytes() for v in views] == expected
    assert all(v.base is not None for v in views)  # views into the mmap, not copies
    samples = list(iter_samples(packed))
    assert [s.jpeg for s in samples] == expected
    assert [s.meta for s in samples] == [json.loads(reference[f"{k}.json"]) for k in catalog.keys]


def test_index_parser_equals_tar_scan(packed):
    for entry in fmt.open_shards(packed).entries:
        assert fmt.read_index(entry.idx) == fmt.scan_tar(entry.tar)
    assert shards.index.scan_tar is fmt.scan_tar  # one tar-header walk, one splitter
    assert fmt.split_name("dir/a.b.jpg") == ("dir/a", "b.jpg")


def test_metadata_sizes_from_json_and_from_headers(tmp_path, jpegs):
    """Sizes recorded by `engine shard` are used as they are; older shards without them get
    their JPEG headers parsed; both equal the decoded image's size."""
    truth = [Image.open(io.BytesIO(j)).size for j in jpegs]
    without = tmp_path / "old"
    write_shards(without, jpegs, shard_size=SHARD_SIZE, labels=[0] * N)
    with_sizes = tmp_path / "new"
    write_shards(with_sizes, jpegs, shard_size=SHARD_SIZE, labels=[0] * N)
    for entry in fmt.open_shards(with_sizes).entries:  # record a fake size: it must be used
        _rewrite_json(entry.tar, lambda meta: {"path": meta["path"], "width": 7, "height": 5})
    old = [m for e in fmt.open_shards(without).entries for m in [fmt.read_shard_meta(e)]]
    assert [wh for m in old for wh in zip(m.widths, m.heights, strict=True)] == truth
    assert load_catalog(without).image_sizes(range(N))[0].tolist() == [w for w, _ in truth]
    new_w, new_h = load_catalog(with_sizes).image_sizes(range(N))
    assert new_w.tolist() == [7] * N and new_h.tolist() == [5] * N
    assert [m.labels for m in old] == [[0] * 4, [0] * 4, [0]]
    assert old[0].keys == [f"img_{i:05d}" for i in range(4)] and old[2].offset == 8


def _rewrite_json(tar, edit) -> None:
    """Rewrite each json member in place with the same length (space-padded)."""
    data = bytearray(tar.read_bytes())
    for key, members in fmt.scan_tar(tar):
        offset, size = members["json"]
        new = json.dumps(edit(json.loads(data[offset : offset + size]))).encode()
        assert len(new) <= size, key
        data[offset : offset + size] = new.ljust(size)
    tar.write_bytes(bytes(data))


def test_one_shard_set_is_passed_around(packed, monkeypatch):
    opened = fmt.open_shards(packed)
    calls = []
    real = fmt.load_manifest
    monkeypatch.setattr(fmt, "load_manifest", lambda d: calls.append(d) or real(d))
    assert fmt.open_shards(opened) is opened
    assert len(load_catalog(opened)) == N and len(list(iter_samples(opened))) == N
    assert MetaCache(opened).rows(4, 6)[0] == ["img_00004", "img_00005"]
    assert calls == []  # nobody read the manifest again
    assert opened.num_samples == N and [e.offset for e in opened.entries] == [0, 4, 8]


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"format": "engine.shards/1", "shards": [', "is not valid JSON"),
        ("[]", "holds a JSON list, not a manifest object"),
        ('{"format": "engine.shards/1", "labeled": true, "classes": [], "shard_size": 4, '
         '"shards": [3], "num_samples": 3}', "'shards' must be a list"),
    ],
)  # fmt: skip
def test_broken_manifest_is_one_line_user_error(tmp_path, content, words):
    (tmp_path / "manifest.json").write_text(content)
    for read in (fmt.open_shards, load_catalog, lambda d: make_loader(d, backend="pil")):
        with pytest.raises(UserError, match=words) as err:
            read(tmp_path)
        assert "\n" not in str(err.value) and "engine shard --force" in str(err.value)


@pytest.mark.parametrize("content", ['{"format": "engine.shards/1", "shards": [', "[]"])
def test_engine_shard_on_broken_manifest_is_one_line(tmp_path, content):
    src = tmp_path / "src" / "cls_a"
    src.mkdir(parents=True)
    (src / "a.jpg").write_bytes(make_jpeg(64, 48, seed=0))
    out = tmp_path / "out"
    claim_output_dir(out, SHARDS_OUTPUT)  # an engine shard folder whose manifest broke
    (out / "manifest.json").write_text(content)
    result = CliRunner().invoke(main, ["shard", str(tmp_path / "src"), "--out", str(out)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    message = [line for line in result.output.splitlines() if "manifest.json" in line]
    assert len(message) == 1 and "engine shard --force" in message[0], result.output
