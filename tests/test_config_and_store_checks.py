"""Wrong types in `--config` and inconsistent store attributes: one line each, before any work.

Config types: `engine.config.from_dict` checks every value against its dataclass field's
annotation (every section). Store attributes: `features.store_check.check_store`, run when a
store is opened (or built in memory), checks them against the arrays.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from heads_helpers import write_store

from engine.cli import main
from engine.config import from_dict
from engine.errors import UserError
from features.store import FeatureStore, open_store
from heads.screen import ScreenConfig

N = 79


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line(result, *texts: str) -> None:
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    for text in texts:
        assert text in result.output, result.output


def _store(path, **attrs):
    rng = np.random.default_rng(0)
    embed = rng.standard_normal((N, 512)).astype(np.float16)
    data = FeatureStore.from_arrays(embed=embed, labels=np.arange(N) % 2, classes=["a", "b"])
    write_store(path, data, **attrs)
    return path


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [("train", "seed", True, "expected int"), ("train", "epochs_lp", 2.5, "expected int"),
     ("train", "epochs_lp", "10", "expected int"), (None, "weights", 5, "expected str"),
     ("screen", "knn_k", "5", "expected int"), (None, "rounds", 1.5, "expected int")],
)  # fmt: skip
def test_config_type_errors_are_one_line_naming_key_value_and_type(tmp_path, section, key, value,
                                                                   expected):  # fmt: skip
    settings = {section: {key: value}} if section else {key: value}
    config = tmp_path / "c.json"
    config.write_text(json.dumps(settings))
    result = _invoke("train", "--config", config, "--runs", tmp_path / "runs")
    where = f"config.{section}.{key}" if section else f"config.{key}"
    _one_line(result, f"config key {where} is {value!r} ({type(value).__name__}), {expected}")
    assert not (tmp_path / "runs").exists()


def test_config_types_accept_what_json_writes():
    cfg = from_dict(ScreenConfig, {"rounds": 1, "extras": [], "knn_k": 7})
    assert cfg.extras == () and cfg.knn_k == 7
    with pytest.raises(UserError, match=r"config key ScreenConfig.extras is \['x', 1\]"):
        from_dict(ScreenConfig, {"extras": ["x", 1]})


def test_a_depth_attribute_that_is_not_a_number_is_one_line(tmp_path):
    store = _store(tmp_path / "f.zarr", depth="1; rm -rf /")
    result = _invoke("screen", "--features", store, "--out", tmp_path / "S")
    _one_line(result, "attribute depth is '1; rm -rf /', expected an integer in 0..12")
    assert not (tmp_path / "S").exists()
    for bad in (13, -1, True, 2.0):
        zarr.open_group(str(store), mode="r+").attrs["depth"] = bad
        with pytest.raises(UserError, match=f"attribute depth is {bad!r}"):
            open_store(store)


def test_a_million_classes_over_79_samples_is_refused_before_any_work(tmp_path):
    store = _store(tmp_path / "f.zarr")
    zarr.open_group(str(store), mode="r+").attrs["classes"] = [f"{i:07d}" for i in range(10**6)]
    start = time.perf_counter()
    result = _invoke("screen", "--features", store, "--out", tmp_path / "S")
    _one_line(result, "attribute classes lists 1000000 classes, more than the 10000 four-digit")
    assert time.perf_counter() - start < 20  # refused from the attributes, not after (N, K) work
    assert not (tmp_path / "S").exists()
    zarr.open_group(str(store), mode="r+").attrs["classes"] = [f"{i:04d}" for i in range(1000)]
    assert len(open_store(store).classes) == 1000  # more classes than samples is allowed


@pytest.mark.parametrize(
    ("attrs", "message"),
    [({"classes": ["a"]}, "labels span 0..1 but attribute classes lists 1 classes"),
     ({"views": 0}, "attribute views is 0, expected an integer in >= 1"),
     ({"classes": "ab"}, "attribute classes must be a list of folder names"),
     ({"weights": "random"}, "attribute weights is not a mapping"),
     ({"depth": 1}, "lacks the arrays ['tokens']")],
)  # fmt: skip
def test_attributes_are_checked_against_the_arrays(tmp_path, attrs, message):
    store = _store(tmp_path / "f.zarr")
    open_store(store)  # valid as written
    zarr.open_group(str(store), mode="r+").attrs.update(attrs)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        open_store(store)


def test_views_must_match_the_tokens(tmp_path):
    tokens = np.zeros((2, N, 5, 8), np.float16)
    labels = np.arange(N) % 2
    data = FeatureStore.from_arrays(embed=np.zeros((N, 4), np.float16), labels=labels,
                                    classes=["a", "b"], tokens=tokens, depth=1)  # fmt: skip
    assert data.views == 2 and data.tokens.shape == (2, N, 5, 8)
    write_store(tmp_path / "f.zarr", data, views=3)
    with pytest.raises(UserError, match=r"tokens has shape \(2, 79, 5, 8\), expected \(3, 79"):
        open_store(tmp_path / "f.zarr")
    with pytest.raises(UserError, match="labels span -2..1"):
        FeatureStore.from_arrays(embed=np.zeros((N, 4)), labels=labels - 2 * (labels == 0),
                                 classes=["a", "b"])  # fmt: skip
