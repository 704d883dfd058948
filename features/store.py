"""The Zarr feature store of DESIGN.md: trunk tokens, embeddings, labels and keys per sample.

    store = open_store("work/features/train.zarr")    # validated (features.store_check)
    store.labels                # (N,) int64, -1 when unlabeled
    store.embed[:]              # (N, 512) float16, L2-normalised (a lazy Zarr array)
    store.tokens[0, 0:256]      # (256, 50, 768) float16 of view 0; None at depth 0
    store = FeatureStore.from_arrays(embed=e, labels=y, classes=names)   # the same, in memory

Layout (Zarr v3 group): `keys`, `paths` (N,) UTF-8; `labels` (N,) int32; `embed` (N, 512) and
`tokens` (V, N, 50, 768) float16, chunked along N by `chunk_n` rows (a divisor of the shards'
shard_size, so ranks that own whole shards never write the same chunk) and by one view along V.

Measured (`python -m bench.features_bench --store`, 2-core CPU): zstd-1 shrinks fp16 tokens by
8% but cuts writes 2-4x and reads 2-6x, so `tokens` and `embed` are stored uncompressed;
256-row chunks (19.7 MB per view) wrote fastest (309 MB/s; 139-152 for 64-128 rows). They skip
zarr's write machinery (`features.chunkio`: the same bytes, temp file + rename, direct I/O;
`python -m bench.store_bench` times it against the all-zarr `write_chunk_zarr`).

Depth: a store of depth k holds the tokens entering block 12 - k and serves any k' <= k
(`features.split.Advance` runs the blocks between); `check_depth(k')`, the one depth check of
every stage, refuses k' > k.

Resuming: chunks finished by `write_chunk` leave marker files in `<store>.progress/` (outside
the Zarr hierarchy); `attrs["complete"]` turns true once every chunk is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from engine.atomic import fsync_tree
from engine.errors import UserError
from engine.outputs import OutputKind, claim_output_dir, remove_owned
from features.chunkio import RawChunks
from features.store_check import check_store

log = logging.getLogger(__name__)

FORMAT = "engine.features/1"
MODEL = "ViT-B-32"
TOKEN_SHAPE = (50, 768)  # 7x7 patches + class token, width 768
EMBED_DIM = 512
ARRAYS = ("keys", "paths", "labels", "embed", "tokens")


@dataclass
class StoreSpec:
    """What a new store will hold; everything but `n` and `chunk_n` becomes a group attribute."""

    n: int
    chunk_n: int
    depth: int
    views: int
    classes: list[str]
    weights: dict
    preprocess: dict
    model: str = MODEL
    token_shape: tuple[int, int] = TOKEN_SHAPE
    embed_dim: int = EMBED_DIM
    compressor: str = "none"
    source: dict | None = None  # the shards it came from (folder, fingerprint), for staleness

    def attrs(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "weights": dict(self.weights),
            "depth": self.depth,
            "classes": list(self.classes),
            "views": self.views,
            "preprocess": self.preprocess,
            "source": self.source or {},
            "complete": False,
        }


def _compressor(name: str):
    if name == "none":
        return None
    from zarr.codecs import BloscCodec, ZstdCodec

    return {
        "zstd": ZstdCodec(level=1),
        "lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    }[name]


def progress_dir(path: Path) -> Path:
    """Folder of per-chunk completion markers of a store being written."""
    path = Path(path)
    return path.with_name(path.name + ".progress")


class FeatureStore:
    """The one feature store: written by the extractor, read (and validated) by every stage.

    On disk (`open_store`, `FeatureStore.create`) its arrays are the Zarr group's, read
    lazily; in memory (`FeatureStore.from_arrays`: tests, benchmarks, simulations) they are
    NumPy arrays. Readers see the same attributes either way: `embed`, `tokens`, `labels`,
    `keys`, `paths`, `classes`, `depth`, `views`, `weights`, `source`, `attrs`.
    """

    def __init__(self, path: Path | None, group: zarr.Group | None, arrays: dict | None = None,
                 attrs: dict | None = None):  # fmt: skip
        self.path = Path(path) if path is not None else None
        self.group = group
        self.attrs = dict(group.attrs) if group is not None else dict(attrs or {})
        self._arrays: dict = dict(arrays or {})
        self._raw_chunks: dict[str, RawChunks | None] = {}
        self._read: dict = {}

    # ------------------------------------------------------------------ creation / writing
    @classmethod
    def create(cls, path: Path, spec: StoreSpec) -> FeatureStore:
        """A new, empty store at `path`: an engine store there is replaced, any other folder
        that is not empty is refused (`engine.outputs`; a user's files are never deleted)."""
        path = Path(path)
        remove_store(path)
        claim_output_dir(path, STORE_OUTPUT)
        # The format attribute from the first write on: zarr.json is the store's marker.
        group = zarr.open_group(
            str(path), mode="w", zarr_format=3, attributes={"format": FORMAT, "complete": False}
        )
        n, c = spec.n, spec.chunk_n
        for name in ("keys", "paths"):
            group.create_array(name, shape=(n,), chunks=(c,), dtype=str)
        group.create_array("labels", shape=(n,), chunks=(c,), dtype="int32", fill_value=-1)
        float_codec = _compressor(spec.compressor)
        group.create_array(
            "embed",
            shape=(n, spec.embed_dim),
            chunks=(c, spec.embed_dim),
            dtype="float16",
            compressors=float_codec,
            fill_value=0,
        )
        if spec.depth >= 1:
            group.create_array(
                "tokens",
                shape=(spec.views, n, *spec.token_shape),
                chunks=(1, c, *spec.token_shape),
                dtype="float16",
                compressors=float_codec,
                fill_value=0,
            )
        group.attrs.update(spec.attrs())
        progress_dir(path).mkdir(parents=True, exist_ok=True)
        return cls(path, group)

    @classmethod
    def open_for_writing(cls, path: Path) -> FeatureStore:
        return cls(path, zarr.open_group(str(path), mode="r+", zarr_format=3))

    @property
    def n(self) -> int:
        """N, the number of samples."""
        return self._array("labels").shape[0]

    num_samples = n

    @property
    def chunk_n(self) -> int:
        return self.group["labels"].chunks[0]

    @property
    def num_chunks(self) -> int:
        return -(-self.n // self.chunk_n)

    def chunk_rows(self, chunk: int) -> slice:
        """Rows [start, stop) of chunk `chunk`."""
        start = chunk * self.chunk_n
        return slice(start, min(start + self.chunk_n, self.n))

    def _array(self, name: str) -> zarr.Array:
        """The named array, opened once (a group lookup re-reads its metadata from disk)."""
        array = self._arrays.get(name)
        if array is None:
            array = self._arrays[name] = self.group[name]
        return array

    def _raw(self, name: str) -> RawChunks | None:
        if name not in self._raw_chunks:
            self._raw_chunks[name] = RawChunks.of(self._array(name))
        return self._raw_chunks[name]

    def write_chunk(self, chunk: int, *, keys, paths, labels, embed, tokens=None) -> None:
        """Write every array's rows of one chunk, then mark the chunk done.

        Thread-safe for distinct chunks (each chunk is its own files). Uncompressed `tokens`
        and `embed` go straight from the caller's arrays to their chunk files (no copy when
        they are C-contiguous float16 per view); compressed ones through zarr.

        Args:
            chunk: chunk number along N.
            keys, paths: lists of str, one per row.
            labels: (n,) int.
            embed: (n, 512) float, L2-normalised.
            tokens: (V, n, 50, 768) float when the store has depth >= 1.
        """
        rows = self._check_chunk(chunk, keys, paths, labels, embed, tokens)
        raw_tokens = self._raw("tokens") if tokens is not None else None
        raw_embed = self._raw("embed")
        if tokens is not None and raw_tokens is not None:
            for v in range(len(tokens)):
                raw_tokens.write((v, chunk), tokens[v])  # (n, 50, 768), one file per view
        elif tokens is not None:
            self._array("tokens")[:, rows] = np.asarray(tokens, dtype=np.float16)
        if raw_embed is not None:
            raw_embed.write((chunk,), embed)
        else:
            self._array("embed")[rows] = np.asarray(embed, dtype=np.float16)
        self._write_small(rows, keys, paths, labels)
        self._mark_done(chunk)

    def write_chunk_zarr(self, chunk: int, *, keys, paths, labels, embed, tokens=None) -> None:
        """`write_chunk` through zarr for every array (the reference the raw path must match)."""
        rows = self._check_chunk(chunk, keys, paths, labels, embed, tokens)
        if tokens is not None:
            self.group["tokens"][:, rows] = np.asarray(tokens, dtype=np.float16)
        self.group["embed"][rows] = np.asarray(embed, dtype=np.float16)
        self._write_small(rows, keys, paths, labels)
        self._mark_done(chunk)

    def _check_chunk(self, chunk, keys, paths, labels, embed, tokens) -> slice:
        rows = self.chunk_rows(chunk)
        n = rows.stop - rows.start
        if not len(keys) == len(paths) == len(labels) == len(embed) == n:
            raise ValueError(f"chunk {chunk} needs {n} rows")
        if ("tokens" in self.group) != (tokens is not None):
            raise ValueError("tokens must be given exactly when the store has depth >= 1")
        if tokens is not None and len(tokens[0]) != n:
            raise ValueError(f"chunk {chunk} needs {n} token rows per view, got {len(tokens[0])}")
        return rows

    def _write_small(self, rows: slice, keys, paths, labels) -> None:
        self._array("labels")[rows] = np.asarray(labels, dtype=np.int32)
        self._array("keys")[rows] = np.asarray(keys, dtype=object)
        self._array("paths")[rows] = np.asarray(paths, dtype=object)

    def _mark_done(self, chunk: int) -> None:
        (progress_dir(self.path) / f"chunk-{chunk:06d}.done").touch()  # last: only whole chunks

    def done_chunks(self) -> set[int]:
        """Chunks written completely (all of them once the store is complete)."""
        if self.complete:
            return set(range(self.num_chunks))
        folder = progress_dir(self.path)
        if not folder.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in folder.glob("chunk-*.done")}

    def mark_complete(self) -> None:
        """Flag the store complete (after every chunk) and drop the progress markers."""
        missing = set(range(self.num_chunks)) - self.done_chunks()
        if missing:
            raise RuntimeError(f"{len(missing)} chunks unwritten, e.g. {sorted(missing)[:5]}")
        fsync_tree(self.path)  # chunk files are written without a per-file fsync (chunkio)
        self.group.attrs["complete"] = True
        self.attrs["complete"] = True
        shutil.rmtree(progress_dir(self.path), ignore_errors=True)

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_arrays(cls, *, embed, labels, classes, tokens=None, depth: int = 0, keys=None,
                    paths=None, attrs: dict | None = None) -> FeatureStore:  # fmt: skip
        """An in-memory store over NumPy arrays (tests, benchmarks), validated like one on disk.

        Args:
            embed: (N, D) embeddings; labels: (N,) int, -1 when unlabeled; classes: K names.
            tokens: (V, N, L, W) at `depth` >= 1, else None.
            keys, paths: per-sample strings (default: the row numbers).
            attrs: further group attributes (weights, preprocess, source, ...).
        """
        rows = [str(i) for i in range(len(labels))]
        arrays = {"embed": embed, "labels": np.asarray(labels),
                  "keys": np.asarray(rows if keys is None else keys, object),
                  "paths": np.asarray(rows if paths is None else paths, object)}  # fmt: skip
        if tokens is not None:
            arrays["tokens"] = tokens
        views = int(tokens.shape[0]) if tokens is not None else 1
        base = {"format": FORMAT, "model": MODEL, "depth": depth, "views": views,
                "classes": list(classes), "weights": {"name": "random", "sha256": None}}  # fmt: skip
        store = cls(None, None, arrays, {**base, **(attrs or {})})
        check_store("(in memory)", store.attrs, store._arrays, on_disk=False)
        return store

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def depth(self) -> int:
        return int(self.attrs["depth"])

    @property
    def views(self) -> int:
        """Cached views V (1 at depth 0: the embedding of view 0)."""
        return int(self.attrs["views"])

    @property
    def classes(self) -> list[str]:
        return list(self.attrs["classes"])

    @property
    def weights(self) -> dict:
        return dict(self.attrs.get("weights") or {})

    @property
    def source(self) -> dict:
        """The shards it was made from: `folder`, `fingerprint`, `num_samples` ({} if unknown)."""
        source = self.attrs.get("source")
        return dict(source) if isinstance(source, dict) else {}

    def _strings(self, name: str) -> list[str]:
        if name not in self._read:
            self._read[name] = [str(s) for s in np.asarray(self._array(name)[:]).tolist()]
        return self._read[name]

    @property
    def keys(self) -> list[str]:
        return self._strings("keys")

    @property
    def paths(self) -> list[str]:
        return self._strings("paths")

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class index per sample, -1 when unlabeled (read once)."""
        if "labels" not in self._read:
            self._read["labels"] = np.asarray(self._array("labels")[:]).astype(np.int64)
        return self._read["labels"]

    @property
    def embed(self):
        """(N, D) float16 L2-normalised embeddings: the lazy Zarr array on disk (slice it, or
        read rows with `heads.tensors.read_rows`)."""
        return self._array("embed")

    @property
    def tokens(self):
        """(V, N, L, W) float16 tokens entering block 12 - depth (lazy Zarr), None at depth 0."""
        return self._array("tokens") if self.depth >= 1 else None

    def check_depth(self, depth: int, alternative: str = "") -> None:
        """The one depth check: refuse a depth this store cannot serve (k' > k)."""
        if depth > self.depth:
            where = self.path or "(in memory)"
            raise UserError(
                f"--unfreeze-last {depth} is larger than the depth {self.depth} of the feature "
                f"store {where}; rebuild features with `engine features SHARDS --unfreeze-last "
                f"{depth} --out {where} --force`{alternative}"
            )


def remove_store(path: Path) -> None:
    """Delete an engine store and its progress markers (for --force and fresh starts).

    Raises:
        UserError: `path` is not an engine store (a user's folder, another tool's Zarr group),
            or its progress folder holds anything but chunk markers: nothing is deleted.
    """
    path, progress = Path(path), progress_dir(Path(path))
    if progress.is_dir() and any(not _is_marker(p) for p in progress.iterdir()):
        raise UserError(
            f"{progress} holds files other than the engine's chunk markers; it is left as it is: "
            "move them away or choose another --out"
        )
    remove_owned(path, STORE_OUTPUT)
    if progress.is_dir():
        shutil.rmtree(progress)


def _is_marker(path: Path) -> bool:
    return path.is_file() and path.name.startswith("chunk-") and path.name.endswith(".done")


def is_engine_store(folder: Path) -> bool:
    """Whether `folder` is a Zarr group with this engine's format attribute (its marker)."""
    try:
        meta = json.loads((Path(folder) / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and (meta.get("attributes") or {}).get("format") == FORMAT


STORE_OUTPUT = OutputKind("feature store", "features", recognise=is_engine_store, marker_file=False)


def as_store(store) -> FeatureStore:
    """`store` itself when it is a FeatureStore, else the validated store at that path."""
    return store if isinstance(store, FeatureStore) else open_store(Path(store))


def open_store(
    path: Path, *, model: str | None = MODEL, require_complete: bool = True
) -> FeatureStore:
    """Open and validate a feature store (`features.store_check`: attributes vs arrays).

    Args:
        path: the `.zarr` folder.
        model: architecture the caller expects (None: any).
        require_complete: refuse a store whose extraction has not finished.

    Raises:
        UserError: missing, not an engine feature store, another model, unfinished, or an
            attribute or array that does not fit; the message names the path and what to do.
    """
    path = Path(path)
    redo = f"re-create it with `engine features --out {path} --force`"
    if not (path / "zarr.json").is_file():
        raise UserError(f"no feature store at {path}; create it with `engine features`")
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
    except (ValueError, OSError) as err:  # zarr errors subclass ValueError
        raise UserError(f"{path} is not a Zarr v3 group ({err}); {redo}") from err
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise UserError(f"{path} is not an {FORMAT} store (format={attrs.get('format')!r}); {redo}")
    if model is not None and attrs.get("model") != model:
        raise UserError(
            f"{path} holds features of model {attrs.get('model')!r}, not {model!r}; {redo}"
        )
    # Only our own extractor writes `complete` (False until the end); a store written by
    # another tool in the DESIGN.md format has no such attribute and is taken as finished.
    if require_complete and attrs.get("complete", True) is False:
        raise UserError(
            f"{path} is unfinished (extraction was interrupted); run `engine features` again "
            "to resume it"
        )
    arrays = {name: group[name] for name in group.array_keys()}
    check_store(path, attrs, arrays)
    return FeatureStore(path, group, arrays)
