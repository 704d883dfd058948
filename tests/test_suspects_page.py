"""suspects.html / suspects.csv (heads.screen.page) and shard thumbnails (shards.thumbs)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tempfile
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from heads.screen.page import PageConfig, PageSource, write_suspects
from heads.screen.partition import CLEAN, DROPPED, RELABELED, STATES
from heads.screen.report import summarise
from heads.screen.rounds import ScreenResult
from heads.screen.suspects import CSV_HEAD, read_suspects_csv, suspect_rows
from shards import thumbs
from shards.config import ShardConfig
from shards.reader import iter_samples
from shards.writer import pack

# Folder names a page must show as text: unicode, quotes, and markup that must not run.
CLASSES = ["<script>alert(1)", "Rosa canina", 'rosé "q" & co']
PER_CLASS = 8
COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 200)]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """3 class folders x 8 JPEGs (one small, one with quotes in its name) in shards of 5."""
    src = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    for c, (name, colour) in enumerate(zip(CLASSES, COLOURS, strict=True)):
        folder = src / name
        folder.mkdir()
        for j in range(PER_CLASS):
            size = (60, 40) if j == 0 else (300, 200)
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (*size[::-1], 3)), 0, 255)
            file = folder / (f'it\'s "{j}".jpg' if j == 1 else f"{c}_{j}.jpg")
            Image.fromarray(pixels.astype(np.uint8)).save(file, quality=90)
    out = tmp_path_factory.mktemp("shards") / "train"
    manifest = pack(src, out, ShardConfig(shard_size=5, short_side=None, workers=1))
    samples = list(iter_samples(out))
    return out, manifest, samples


def _result(labels: np.ndarray, k: int, seed: int = 0) -> ScreenResult:
    """A screening outcome with known states, scores and consensus."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    state = rng.choice(len(STATES), n, p=[0.5, 0.15, 0.15, 0.1, 0.1]).astype(np.int8)
    consensus = rng.dirichlet(np.ones(k), n).astype(np.float32)  # (N, K)
    proposed = np.where(state == RELABELED, (labels + 1) % k, labels)
    proposed[state >= 3] = -1
    combined = rng.permutation(n).astype(np.float32) / n  # distinct: a strict order
    scores = {"knn": rng.uniform(0, 1, n), "model": rng.uniform(0, 1, n)}
    rounds = [{"round": 0, "changed": 1.0, **summarise(state, labels, k)}]
    return ScreenResult(
        state, np.zeros((n, k), np.float32), rng.uniform(0, 1, n).astype(np.float32),
        proposed, rng.uniform(0, 1, n), combined, scores, consensus, rounds,
    )  # fmt: skip


def _source(packed, shards=True, **kw) -> tuple[PageSource, np.ndarray]:
    out, manifest, samples = packed
    source = PageSource(
        paths=[s.meta["path"] for s in samples],
        classes=manifest["classes"],
        keys=[s.key for s in samples],
        store="train.zarr",
        shards=out if shards else None,
        fingerprint=manifest["fingerprint"],
        settings={"rounds": 0, "note": "<b>not bold</b>"},
        **kw,
    )
    return source, np.array([s.label for s in samples])


class _PageParser(HTMLParser):
    """Cards (attrs), images (attrs + card index + example side), scripts, visible text."""

    def __init__(self):
        super().__init__()
        self.cards, self.images, self.scripts, self.text = [], [], 0, []
        self._side, self._card = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "article":
            self.cards.append(attrs)
            self._card, self._side = int(attrs["data-index"]), None
        elif tag == "div" and attrs.get("class") in ("given-ex", "proposed-ex"):
            self._side = attrs["class"].split("-")[0]
        elif tag == "div" and attrs.get("class") == "examples":
            self._side = None
        elif tag == "img":
            self.images.append({**attrs, "card": self._card, "side": self._side})
        elif tag == "section":
            self._card, self._side = None, None
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _decode(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    image.load()
    return image


def test_thumbnails_by_index_equal_thumbnails_of_the_full_tar_walk(packed):
    out, manifest, samples = packed
    wanted = [0, 4, 5, 23, 11]  # first, shard ends and starts, last: every .idx is used right
    got = thumbs.read_thumbnails(out, wanted, expect_keys={s.index: s.key for s in samples})
    assert sorted(got) == sorted(wanted)
    for i in wanted:
        assert got[i] == thumbs.thumbnail(samples[i].jpeg)  # same bytes as from the tar walk
        size = Image.open(io.BytesIO(got[i])).size
        original = Image.open(io.BytesIO(samples[i].jpeg)).size
        assert min(size) == min(thumbs.THUMB_SIDE, min(original))  # small ones not enlarged
    assert Image.open(io.BytesIO(got[4])).size == (192, 128)  # 300x200 -> short side 128


def test_thumbnails_refuse_other_shards(packed):
    out, manifest, samples = packed
    with pytest.raises(thumbs.ShardsUnavailable, match="the store has 'other-key'"):
        thumbs.read_thumbnails(out, [3], expect_keys={3: "other-key"})
    with pytest.raises(thumbs.ShardsUnavailable, match="the store was made from 0000"):
        thumbs.check_shards(out, fingerprint="0000")
    with pytest.raises(thumbs.ShardsUnavailable, match="the store 99"):
        thumbs.check_shards(out, num_samples=99)


def test_page_cards_images_and_trusted_examples(packed, tmp_path):
    source, labels = _source(packed)
    result = _result(labels, len(CLASSES))
    files = write_suspects(tmp_path, result, labels, source, PageConfig(suspects=10))
    page = _parse(files.html)
    order = np.argsort(result.combined)[:10]
    assert [int(c["data-index"]) for c in page.cards] == order.tolist()  # least trusted first
    assert [c["data-state"] for c in page.cards] == [STATES[result.state[i]] for i in order]
    assert files.note is None and page.images
    for img in page.images:
        _decode(img["src"])  # every data URI is a whole JPEG
    clean = np.flatnonzero(result.state == CLEAN)
    for card in page.cards:
        i = int(card["data-index"])
        mains = [m for m in page.images if m["card"] == i and m["side"] is None]
        assert [int(m["data-index"]) for m in mains] == [i]
        assert min(_decode(mains[0]["src"]).size) == min(
            128, 40 if "_0.jpg" in source.paths[i] else 200
        )
        for side in ("given", "proposed"):
            cls = int(card[f"data-{side}"])
            shown = [
                int(m["data-index"]) for m in page.images if m["card"] == i and m["side"] == side
            ]
            best = clean[labels[clean] == cls]
            best = best[np.argsort(-result.combined[best])][:3]
            assert shown == best.tolist()  # the 3 most trusted clean samples of that class
            assert all(labels[j] == cls for j in shown)
        assert int(card["data-proposed"]) != labels[i] or result.state[i] == RELABELED


def test_csv_round_trip(packed, tmp_path):
    source, labels = _source(packed, names=["Script", "Rosa canina", "Rosé"])
    result = _result(labels, len(CLASSES), seed=1)
    files = write_suspects(tmp_path, result, labels, source, PageConfig(suspects=5))
    rows = read_suspects_csv(files.csv)
    names = [source.label(c) for c in range(len(CLASSES))]
    assert rows == suspect_rows(result, labels, source.paths, names)
    assert list(rows[0]) == [*CSV_HEAD, "knn", "model"]
    assert len(rows) == int((result.state != CLEAN).sum())  # one row per non-clean sample
    assert {r["state"] for r in rows} <= set(STATES[1:])
    first = int(
        np.argsort(result.combined)[(result.state[np.argsort(result.combined)] != CLEAN)][0]
    )
    assert rows[0]["path"] == source.paths[first]
    assert rows[0]["given"] == names[labels[first]]
    assert float(rows[0]["weight"]) == pytest.approx(result.weights[first], abs=1e-4)
    assert files.csv.read_bytes().startswith(b"path,given,proposed,state,weight")
    quoted = [r for r in rows if names[2] in (r["given"], r["proposed"])]
    assert quoted and names[2] == 'Rosé (rosé "q" & co)'  # quotes survive the CSV quoting


@pytest.mark.parametrize("where", ["none", "missing", "foreign"])
def test_page_without_shards_says_why(packed, tmp_path, where):
    source, labels = _source(packed, shards=where != "none")
    if where == "missing":
        source.shards = tmp_path / "gone"
    if where == "foreign":
        source.fingerprint = "ffffffffffffffff"
    result = _result(labels, len(CLASSES))
    files = write_suspects(tmp_path, result, labels, source, PageConfig(suspects=7))
    page = _parse(files.html)
    assert len(page.cards) == 7 and page.images == []
    expected = {"none": "no shards given", "missing": "no shards at", "foreign": "made from"}
    assert expected[where] in files.note
    assert expected[where] in " ".join(page.text)


def test_names_are_escaped_not_markup(packed, tmp_path):
    source, labels = _source(packed)
    files = write_suspects(tmp_path, _result(labels, 3), labels, source, PageConfig(suspects=24))
    html = files.html.read_text(encoding="utf-8")
    page = _parse(files.html)
    assert page.scripts == 1  # only the page's own filter script
    assert "<script>alert" not in html and "<b>not bold" not in html
    text = " ".join(page.text)
    assert "<script>alert(1)" in text  # shown as the text it is
    assert 'rosé "q" & co' in text and 'it\'s "1".jpg' in text
    card_text = [c["data-text"] for c in page.cards]
    assert any('it\'s "1".jpg' in t for t in card_text)  # attribute values survive quoting


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _headless(*args: str) -> str:
    """stdout of one headless Chromium run with a throw-away profile and no network."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", *args],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    return done.stdout


@pytest.mark.skipif(_chromium() is None, reason="needs chromium (apt-get install chromium)")
def test_page_renders_in_headless_chromium(packed, tmp_path):
    source, labels = _source(packed)
    files = write_suspects(tmp_path, _result(labels, 3), labels, source, PageConfig(suspects=4))
    shot = tmp_path / "shot.png"
    _headless(f"--screenshot={shot}", "--window-size=1200,900", files.html.as_uri())
    dom = _headless("--dump-dom", files.html.as_uri())
    assert '<form id="filter" onsubmit' in dom  # the script ran: it un-hides the filter
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)  # (H, W, 3)
    assert pixels.std() > 20  # not a blank page
    # the thumbnails' colours (red, green, blue classes) are on screen, not just text
    for colour in COLOURS:
        close = np.abs(pixels - np.array(colour)).max(axis=2) < 40
        assert close.sum() > 500, colour


def test_screening_page_finds_the_shards_the_store_recorded(packed, tmp_path):
    """The store's `source.folder` is the default shards (found by features.provenance,
    checked by fingerprint); a moved folder gives a page that says to pass --shards."""
    from features.provenance import find_shards
    from features.store import FeatureStore
    from heads.screen.page import write_screening_page

    out, manifest, samples = packed
    source, labels = _source(packed)
    recorded = {"folder": str(out), "fingerprint": manifest["fingerprint"],
                "num_samples": len(labels)}  # fmt: skip
    store = FeatureStore.from_arrays(
        embed=np.zeros((len(labels), 4), np.float16), labels=labels, classes=source.classes,
        keys=source.keys, paths=source.paths, attrs={"source": recorded},
    )  # fmt: skip
    result = _result(labels, 3)
    folder, _, note = find_shards(store)
    assert folder == out and note is None
    files = write_screening_page(tmp_path / "rounds", result, store, suspects=6, shards=folder,
                                 names={CLASSES[1]: "dog rose"})  # fmt: skip
    assert files.note is None and len(_parse(files.html).images) > 6
    assert "dog rose (Rosa canina)" in files.html.read_text(encoding="utf-8")
    with np.load(tmp_path / "rounds" / "scores.npz") as saved:
        np.testing.assert_array_equal(saved["state"], result.state)
        np.testing.assert_allclose(saved["combined"], result.combined)
        np.testing.assert_allclose(saved["signal_knn"], result.scores["knn"].astype(np.float32))
    store.attrs["source"] = {**recorded, "folder": str(tmp_path / "moved")}
    folder, _, note = find_shards(store)
    files = write_screening_page(tmp_path / "r2", result, store, suspects=6, shards=folder,
                                 shards_note=note)  # fmt: skip
    assert folder is None and "no longer at" in files.note and "pass --shards" in files.note
    assert _parse(files.html).images == []
    store.attrs["source"] = {**recorded, "fingerprint": "0123456789abcdef"}  # other shards
    files = write_screening_page(tmp_path / "r3", result, store, suspects=6, shards=out)
    assert "made from 0123456789abcdef" in files.note


def test_mislabeled_share_counts_known_wrong_paths_among_the_first_rows(packed, tmp_path):
    from heads.screen.suspects import mislabeled_share

    source, labels = _source(packed)
    result = _result(labels, 3, seed=2)
    files = write_suspects(tmp_path, result, labels, source, PageConfig(suspects=3))
    rows = read_suspects_csv(files.csv)
    wrong = {rows[0]["path"], rows[2]["path"], "not/a/suspect.jpg"}
    assert mislabeled_share(files.csv, wrong, top=2) == (1, 2)
    assert mislabeled_share(files.csv, wrong, top=len(rows) + 5) == (2, len(rows))


def test_page_and_csv_show_the_folder_mixture_class_and_probability(packed, tmp_path):
    """With the folder-mixture stage, suspects.csv and each card name its proposed class and
    its probability; without it the two CSV columns stay empty (test_csv_round_trip)."""
    from dataclasses import replace

    source, labels = _source(packed, names=["Script", "Rosa canina", "Rosé"])
    base = _result(labels, len(CLASSES), seed=1)
    mixture = (labels + 2) % len(CLASSES)
    result = replace(base, mixture_class=mixture,
                     mixture_prob=np.linspace(0.2, 0.9, len(labels)).astype(np.float32))  # fmt: skip
    files = write_suspects(tmp_path, result, labels, source, PageConfig(suspects=5))
    rows = read_suspects_csv(files.csv)
    names = [source.label(c) for c in range(len(CLASSES))]
    by_path = {r["path"]: r for r in rows}
    for i in np.flatnonzero(result.state != CLEAN):
        assert by_path[source.paths[i]]["mixture_class"] == names[mixture[i]]
        assert float(by_path[source.paths[i]]["mixture_prob"]) == pytest.approx(
            result.mixture_prob[i], abs=1e-4
        )
    html = files.html.read_text(encoding="utf-8")
    i = int(np.argsort(result.combined)[0])
    card = html[html.index(f'id="s{i}"') :].split("</article>")[0]
    assert "folder mixture" in card and f"{result.mixture_prob[i]:.3f}" in card
    assert html_escape(names[mixture[i]]) in card
    plain = read_suspects_csv(write_suspects(tmp_path / "b", base, labels, source,
                                             PageConfig(suspects=5)).csv)  # fmt: skip
    assert {r["mixture_class"] for r in plain} == {""}


def test_a_card_names_the_weight_the_final_fit_uses(packed, tmp_path):
    """Issue 19 item 10: "DROPPED ... weight 0.359" read as a contradiction; a dropped
    sample's weight is its soft-relabel weight on the other classes' consensus."""
    source, labels = _source(packed)
    result = _result(labels, len(CLASSES))
    result.state[:] = DROPPED
    result.weights[:] = 0.359
    result.weights[1] = 0.0
    files = write_suspects(tmp_path, result, labels, source, PageConfig(suspects=len(labels)))
    cards = {int(m.group(1)): m.group(0) for m in
             re.finditer(r'<article[^>]*data-index="(\d+)".*?</article>', files.html.read_text(), re.S)}  # fmt: skip
    assert "<th>weight</th>" not in cards[0]
    assert "<th>final-fit weight</th><td>0.359 (on other classes)</td>" in cards[0]
    assert "<th>final-fit weight</th><td>0 (not trained on)</td>" in cards[1]
