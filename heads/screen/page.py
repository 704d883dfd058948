"""`suspects.html` + `suspects.csv`: the screening's suspects in one self-contained page.

    files = write_screening_page(out_dir, result, store, suspects=200, shards=None)
    files.html, files.csv, files.thumbnails, files.note   # note: why there are no thumbnails

    # or, from plain lists (what the above builds from a feature store):
    source = PageSource(paths=paths, classes=folders, keys=keys, shards=Path("work/shards/train"))
    write_suspects(out_dir, result, labels, source, PageConfig(suspects=200))

The page holds a summary (state counts per round and per head / medium / tail class group,
the settings, the store and shards), a card per suspect (thumbnail, path, given and proposed
class, state, scores, and the most trusted samples of both classes beside it, so the choice
is visual), the classes with the largest flagged share, and a few lines of inline JS that
filter by state and search paths and class names. Thumbnails are base64 JPEG data URIs read
from the shards (shards.thumbs): the page needs no server, network or other file. Without
reachable shards the page is written without images and says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np

from engine import runs as run_files
from engine.errors import UserError
from features.store import FeatureStore
from heads.classes import class_members
from heads.screen.page_style import CSS, SCRIPT
from heads.screen.partition import CLEAN, DROPPED, STATES
from heads.screen.suspects import (
    flagged_classes,
    select_suspects,
    suspect_rows,
    write_scores,
    write_suspects_csv,
    write_text_atomic,
)
from shards import thumbs as thumbs_io

log = logging.getLogger(__name__)

PAGE_FILE, CSV_FILE = run_files.SUSPECTS_PAGE, run_files.SUSPECTS_CSV
SIGNAL_TITLES = {"knn": "kNN agreement", "model": "probe", "prototype": "prototype margin",
                 "zero_shot": "zero-shot"}  # fmt: skip


@dataclass
class PageConfig:
    """What the page shows; sized so 200 suspects stay near 5 MB (measured: 5.15 MB for 200
    cards over 100 classes of 500x375 photo-like JPEGs, 581 thumbnails)."""

    suspects: int = 200  # the default; a person reviews ~200 in a sitting
    examples: int = 3  # trusted samples per class beside a card: enough to see the class
    thumb_side: int = 128  # px, short side of a suspect's thumbnail
    example_side: int = 80  # px: examples are repeated on every card, so kept smaller
    classes_shown: int = 10  # classes with the largest flagged share
    flagged_per_class: int = 12  # flagged samples shown per such class

    def __post_init__(self):
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < (0 if name == "suspects" else 1):
                raise ValueError(f"PageConfig.{name} must be a positive int, got {value!r}")


@dataclass
class PageSource:
    """Where the screened samples come from: per-sample paths (and keys), class folders and
    display names, the store, and the shards to read thumbnails from (None: none)."""

    paths: list[str]
    classes: list[str]
    names: list[str] | None = None
    keys: list[str] | None = None
    store: str | None = None
    shards: Path | None = None
    shards_note: str | None = None  # why `shards` is None (moved, not recorded), for the page
    fingerprint: str | None = None
    settings: dict = field(default_factory=dict)

    def label(self, c: int) -> str:
        """Display name of class c: `name (folder)` with --class-names, else the folder."""
        if c < 0:
            return "-"
        folder = self.classes[c]
        name = self.names[c] if self.names else folder
        return folder if name == folder else f"{name} ({folder})"


@dataclass
class SuspectsFiles:
    html: Path
    csv: Path
    thumbnails: int
    note: str | None  # why the page has no thumbnails, when it has none


def source_from_store(store: FeatureStore, *, shards=None, shards_note=None, names=None,
                      settings=None) -> PageSource:  # fmt: skip
    """A PageSource from a feature store and the shards it was made from.

    `shards`: the folder `features.provenance.find_shards` found (None: `shards_note` says
    why); check_shards still refuses any whose fingerprint is not the store's, so the page
    never shows wrong images. `names`: display names in class order, or {folder: name}
    (folders without one keep theirs).
    """
    if isinstance(names, dict):
        names = [names.get(c, c) for c in store.classes]
    return PageSource(
        paths=list(store.paths),
        classes=list(store.classes),
        names=list(names) if names else None,
        keys=list(store.keys) or None,
        store=str(store.path) if store.path else None,
        shards=Path(shards) if shards else None,
        shards_note=shards_note,
        fingerprint=store.source.get("fingerprint"),
        settings=dict(settings or {}),
    )


def write_screening_page(out_dir, result, store: FeatureStore, *, suspects: int = 200,
                         **source) -> SuspectsFiles:  # fmt: skip
    """Everything a screening leaves for a person: scores.npz, suspects.csv, suspects.html.

    `source`: the keyword arguments of `source_from_store` (shards, shards_note, names,
    settings).
    """
    write_scores(out_dir, result)
    page_source = source_from_store(store, **source)
    return write_suspects(out_dir, result, store.labels, page_source, PageConfig(suspects=suspects))


def write_suspects(out_dir, result, labels, source: PageSource, cfg: PageConfig | None = None):
    """Write `suspects.html` and `suspects.csv` into `out_dir` (see module docstring)."""
    cfg = cfg or PageConfig()
    out_dir = Path(out_dir)
    labels = np.asarray(labels, np.int64)
    picks = select_suspects(result, labels, count=cfg.suspects, per_class=cfg.examples)
    folder_names = [source.label(c) for c in range(len(source.classes))]
    rows = suspect_rows(result, labels, source.paths, folder_names, picks.proposed)
    csv_path = write_suspects_csv(out_dir / CSV_FILE, rows, list(result.scores))
    flagged = flagged_classes(result.state, labels, len(source.classes), cfg.classes_shown)
    big, small, note = _thumbnails(source, picks, flagged, result.state, labels, cfg)
    page = _Page(result, labels, source, picks, big, small)
    parts = [_head(source, result, note), _summary(page), _filter_form(),
             _cards(page), _classes(page, flagged, cfg.flagged_per_class)]  # fmt: skip
    html = _document("\n".join(parts))
    path = write_text_atomic(out_dir / PAGE_FILE, html)
    log.info("suspects page: %s (%d cards, %.1f MB)", path, len(picks.order), len(html) / 1e6)
    return SuspectsFiles(path, csv_path, len(big) + len(small), note)


@dataclass
class _Page:
    result: object
    labels: np.ndarray
    source: PageSource
    picks: object
    big: dict  # index -> data URI at thumb_side
    small: dict  # index -> data URI at example_side

    @property
    def carded(self) -> set[int]:
        return set(self.picks.order.tolist())


def _flagged_members(state, labels, c: int, limit: int) -> np.ndarray:
    return np.flatnonzero((labels == c) & (state != CLEAN))[:limit]


def _thumbnails(source: PageSource, picks, flagged, state, labels, cfg: PageConfig):
    """({index: uri} big, {index: uri} small, note): the images the page shows, or a note."""
    if source.shards is None:
        why = source.shards_note or "no shards given or recorded for this store"
        return {}, {}, f"no thumbnails: {why}"
    try:
        shards = thumbs_io.check_shards(
            source.shards, fingerprint=source.fingerprint, num_samples=len(source.paths)
        )
        keys = dict(enumerate(source.keys)) if source.keys else None
        shown = np.unique(np.concatenate([picks.proposed[picks.order], labels[picks.order]]))
        examples = picks.trusted[shown[shown >= 0]].ravel()
        members = [_flagged_members(state, labels, c, cfg.flagged_per_class) for c, *_ in flagged]
        small_idx = np.concatenate([examples[examples >= 0], *members]).astype(np.int64)
        read = thumbs_io.read_thumbnails
        big = read(shards, picks.order, short_side=cfg.thumb_side, expect_keys=keys)
        small = read(shards, small_idx, short_side=cfg.example_side, expect_keys=keys)
    except (thumbs_io.ShardsUnavailable, UserError, OSError, IndexError) as err:
        log.warning("suspects page without thumbnails: %s", err)
        return {}, {}, f"no thumbnails: {err}"
    uri = thumbs_io.data_uri
    return {i: uri(b) for i, b in big.items()}, {i: uri(b) for i, b in small.items()}, None


def _document(body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Screening suspects</title>\n<style>{CSS}</style></head>\n<body>\n{body}\n"
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )


def _head(source: PageSource, result, note: str | None) -> str:
    n, k = len(source.paths), len(source.classes)
    lines = [
        "<h1>Screening suspects</h1>",
        f"<p>{n} samples, {k} classes, screening rounds 0..{len(result.rounds) - 1}. "
        f"Store: <code>{escape(str(source.store or '-'))}</code>; shards: "
        f"<code>{escape(str(source.shards or '-'))}</code>.</p>",
    ]
    if note:
        lines.append(f'<p class="note" id="no-thumbnails">{escape(note)}</p>')
    return "\n".join(lines)


def _table(head: list[str], rows: list[list]) -> str:
    cells = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _summary(page: _Page) -> str:
    """Final state counts per class group, per-round counts, and the settings."""
    state, labels = page.result.state, page.labels
    k = len(page.source.classes)
    groups = {"all": np.arange(k), **class_members(np.bincount(labels, minlength=k))}
    rows = []
    for name, classes in groups.items():
        counts = np.bincount(state[np.isin(labels, classes)], minlength=len(STATES))
        rows.append([f"{name} ({len(classes)} classes)", *counts.tolist(), int(counts.sum())])
    final = _table(["classes", *STATES, "samples"], rows)
    keys = [key for key in STATES if any(key in r.get("all", {}) for r in page.result.rounds)]
    per_round = _table(
        ["round", *keys, "changed"],
        [[r.get("round", i), *(r.get("all", {}).get(key, "") for key in keys),
          f"{100 * float(r.get('changed', 0)):.1f}%"] for i, r in enumerate(page.result.rounds)],
    )  # fmt: skip
    settings = _table(
        ["setting", "value"], [[k, v] for k, v in sorted(page.source.settings.items())]
    )
    return (
        '<section id="summary"><h2>Summary</h2>\n<h3>States after the last round</h3>\n'
        f"{final}\n<h3>Per round</h3>\n{per_round}\n<details><summary>Settings</summary>\n"
        f"{settings}</details></section>"
    )


def _filter_form() -> str:
    """Controls the script reveals (hidden without JS, where they could do nothing)."""
    boxes = "".join(
        f'<label><input type="checkbox" value="{s}" checked> {s}</label>' for s in STATES
    )
    return (
        f'<form id="filter" hidden onsubmit="return false">{boxes}'
        '<input type="search" placeholder="search paths and classes" size="30"></form>'
    )


def _img(uri: str | None, index: int, cls: int, alt: str) -> str:
    if uri is None:
        return f'<div class="noimg" data-index="{index}">no image</div>'
    return f'<img src="{uri}" alt="{escape(alt)}" data-index="{index}" data-class="{cls}">'


def _examples(page: _Page, c: int, kind: str) -> str:
    """The trusted samples of class c (given or proposed side of a card)."""
    if c < 0:
        return f'<div class="{kind}-ex"><h4>no {kind} class</h4></div>'
    imgs = "".join(
        _img(page.small.get(int(i)), int(i), c, page.source.paths[i])
        for i in page.picks.trusted[c]
        if i >= 0
    )
    title = f"trusted {kind}: <b>{escape(page.source.label(c))}</b>"
    return f'<div class="{kind}-ex" data-class="{c}"><h4>{title}</h4>{imgs or "none clean"}</div>'


def final_fit_weight(state: int, weight: float) -> str:
    """The weight the final fit gives a sample, with what it learns where the state alone
    would mislead: a dropped sample keeps a weight under soft relabeling, on a target that
    is not its given label ("DROPPED ... weight 0.359" read as a contradiction)."""
    if weight <= 0:
        return "0 (not trained on)"
    if state == DROPPED:
        return f"{weight:.3f} (on other classes)"  # their consensus, not the given label
    return f"{weight:.3f}"


def _scores(page: _Page, i: int) -> str:
    r = page.result
    rows = [["trust (combined)", f"{r.combined[i]:.3f}"], ["p_clean", f"{r.p_clean[i]:.3f}"],
            ["final-fit weight", final_fit_weight(int(r.state[i]), float(r.weights[i]))]]  # fmt: skip
    rows += [[SIGNAL_TITLES.get(s, s), f"{v[i]:.3f}"] for s, v in r.scores.items()]
    if getattr(r, "mixture_class", None) is not None:  # the folder-mixture stage's class
        name = escape(page.source.label(int(r.mixture_class[i])))
        rows.append(["folder mixture", f"{name} {r.mixture_prob[i]:.3f}"])
    return '<table class="scores">' + "".join(
        f"<tr><th>{escape(a)}</th><td>{b}</td></tr>" for a, b in rows
    ) + "</table>"  # fmt: skip


def _card(page: _Page, rank: int, i: int) -> str:
    src, given, proposed = page.source, int(page.labels[i]), int(page.picks.proposed[i])
    state = STATES[page.result.state[i]]
    text = " ".join([src.paths[i], src.label(given), src.label(proposed)]).lower()
    return (
        f'<article class="card s-{state}" id="s{i}" data-index="{i}" data-state="{state}" '
        f'data-given="{given}" data-proposed="{proposed}" data-text="{escape(text)}">'
        f'<div class="main">{_img(page.big.get(i), i, given, src.paths[i])}</div>'
        f'<div class="info"><div>#{rank} <span class="state">{state}</span></div>'
        f'<div class="path">{escape(src.paths[i])}</div>'
        f"<div>given <b>{escape(src.label(given))}</b><br>proposed "
        f"<b>{escape(src.label(proposed))}</b></div>{_scores(page, i)}</div>"
        f'<div class="examples">{_examples(page, given, "given")}'
        f"{_examples(page, proposed, 'proposed')}</div></article>"
    )


def _cards(page: _Page) -> str:
    n = len(page.picks.order)
    cards = "\n".join(_card(page, rank, int(i)) for rank, i in enumerate(page.picks.order, 1))
    return (
        f'<section id="suspects"><h2>The {n} most suspicious samples</h2>\n'
        "<p>Least trusted first. Beside each: the most trusted samples of its given class "
        f'and of the class the screening proposes.</p>\n<div class="cards">\n{cards}\n</div></section>'
    )


def _classes(page: _Page, flagged, limit: int) -> str:
    """The classes with the largest flagged share, each with (up to `limit`) flagged samples."""
    parts = []
    for c, count, total in flagged:
        items = []
        for i in _flagged_members(page.result.state, page.labels, c, limit):
            state = STATES[page.result.state[i]]
            img = _img(page.small.get(int(i)), int(i), c, page.source.paths[i])
            title = escape(f"{page.source.paths[i]} ({state})")
            href = f' href="#s{i}"' if i in page.carded else ""
            items.append(f'<a{href} title="{title}">{img}</a>')
        more = f" and {count - limit} more" if count > limit else ""
        parts.append(
            f'<div class="flagged" data-class="{c}"><h3>{escape(page.source.label(c))}: '
            f"{count} of {total} flagged ({100 * count / total:.0f}%){more}</h3>{''.join(items)}</div>"
        )
    body = "\n".join(parts) or "<p>no class has a flagged sample</p>"
    return (
        f'<section id="classes"><h2>Classes with the largest flagged share</h2>\n{body}</section>'
    )
