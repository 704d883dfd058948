"""The GPU host's packs, from the lock, checked offline against the wheel record that
`make lock` writes (requirements/wheels-py312.tsv, read from PyPI's index then)."""

from __future__ import annotations

from pathlib import Path

from bench import gpu_pack

# Every third-party module the engine's runtime code imports, and the package it comes from.
RUNTIME_IMPORTS = {"open_clip": "open-clip-torch", "webdataset": "webdataset", "zarr": "zarr",
                   "numcodecs": "numcodecs", "torch": "torch", "torchvision": "torchvision",
                   "numpy": "numpy", "click": "click", "PIL": "pillow", "tqdm": "tqdm",
                   "matplotlib": "matplotlib"}  # fmt: skip


def test_every_locked_runtime_wheel_exists_for_the_hosts_python():
    runtime = gpu_pack.parse_lock(gpu_pack.RUNTIME_LOCK)
    record = {r["name"]: r for r in gpu_pack.read_record()}
    for name, pin in runtime.items():
        row = record[name]
        assert row["version"] == pin.version and row["sha256"] in pin.hashes, name
        assert gpu_pack.compatible(row["filename"]), row["filename"]
    assert runtime["zarr"].version.startswith("3.1.")  # needs no msgspec


def test_slim_pack_holds_every_runtime_import_the_host_lacks_and_nothing_it_has():
    slim, host = set(gpu_pack.slim_names()), gpu_pack.host_names()
    for module, package in RUNTIME_IMPORTS.items():
        assert package in host or package in slim, module
    assert not slim & host and "faiss-cpu" not in slim
    assert {"zarr", "numcodecs", "donfig", "google-crc32c", "open-clip-torch", "ftfy"} <= slim
    record = [r for r in gpu_pack.read_record() if r["group"] == "slim"]
    assert {r["name"] for r in record} == slim
    assert sum(r["size"] for r in record) <= gpu_pack.SLIM_LIMIT == 8 * 2**20


def test_dali_parts_fit_a_call_and_each_wheel_is_whole_or_in_consecutive_pieces(tmp_path):
    rows = [r for r in gpu_pack.read_record() if r["group"] == "dali"]
    assert any(r["name"] == "nvidia-dali-cuda130" for r in rows)
    parts = gpu_pack.plan_parts(rows)
    assert all(sum(e - s for _, s, e in part) <= gpu_pack.PART_LIMIT for part in parts)
    sizes = {r["filename"]: r["size"] for r in rows}
    covered = {}
    for part in parts:
        for name, s, e in part:
            covered[name] = covered.get(name, 0) + e - s
    assert covered == sizes


def test_split_then_join_gives_back_every_wheel_part_by_part(tmp_path, monkeypatch):
    rows = [{"name": "big", "version": "1", "group": "dali", "filename": "big-1-py3-none-any.whl",
             "size": 25, "sha256": ""},
            {"name": "small", "version": "1", "group": "dali",
             "filename": "small-1-py3-none-any.whl", "size": 4, "sha256": ""}]  # fmt: skip
    monkeypatch.setattr(gpu_pack, "read_record", lambda: rows)
    monkeypatch.setattr(gpu_pack, "PART_LIMIT", 10)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / rows[0]["filename"]).write_bytes(bytes(range(25)))
    (wheels / rows[1]["filename"]).write_bytes(b"abcd")
    gpu_pack.split(wheels, tmp_path / "parts")
    parts = sorted((tmp_path / "parts").iterdir())
    assert len(parts) == 3 and (parts[0] / "PARTS").read_text() == "3\n"
    store = tmp_path / "store"
    store.mkdir()
    got = []
    for part in parts:  # as the host receives them, one call each
        for f in part.iterdir():
            (store / f.name).write_bytes(f.read_bytes())
        got.append([p.name for p in gpu_pack.join(store)])
    assert sorted(sum(got, [])) == sorted(r["filename"] for r in rows)
    assert rows[0]["filename"] in got[-1] and got[0] == []  # big: once its last piece came
    assert (store / rows[0]["filename"]).read_bytes() == bytes(range(25))


def test_the_plan_script_runs_every_step_and_call_one_carries_under_8_mib():
    script = (Path(gpu_pack.ROOT) / "bench" / "gpu_plan.sh").read_text()
    for verb in ("pack)", "base)", "dali)"):
        assert verb in script
    assert '--out "$OUT/$1.json"' in script and "-u -m bench.gpu_check" in script
    assert "features" in script.split("BASE_PARTS=")[1].splitlines()[0]
    assert "dali" not in script.split("BASE_PARTS=")[1].splitlines()[0]


def test_each_call_carries_at_most_its_limit():
    """Call 1: the repository's tracked files and the slim pack <= 8 MiB; a DALI call: the
    repository and one part <= 64 MiB."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (gpu_pack.ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=gpu_pack.ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    repo = sum((gpu_pack.ROOT / f).stat().st_size for f in files if (gpu_pack.ROOT / f).is_file())
    rows = gpu_pack.read_record()
    slim = sum(r["size"] for r in rows if r["group"] == "slim")
    assert repo + slim <= 8 * 2**20, (repo, slim)
    parts = gpu_pack.plan_parts([r for r in rows if r["group"] == "dali"])
    largest = max(sum(e - s for _, s, e in part) for part in parts)
    assert repo + largest <= 64 * 2**20


def test_dalis_codec_wheels_do_not_hide_the_hosts_nvidia_packages(tmp_path):
    import subprocess
    import sys

    host, site = tmp_path / "host", tmp_path / "site"
    (host / "nvidia" / "cu13").mkdir(parents=True)  # the host's torch libraries: a namespace
    (host / "nvidia" / "cu13" / "__init__.py").write_text("")
    (site / "nvidia" / "dali").mkdir(parents=True)
    (site / "nvidia" / "dali" / "__init__.py").write_text("")
    (site / "nvidia" / "__init__.py").write_text("")  # what nvjpeg2k's wheel ships
    probe = [sys.executable, "-c", "import nvidia.dali, nvidia.cu13"]
    env = {"PYTHONPATH": f"{site}:{host}"}
    assert subprocess.run(probe, env=env, capture_output=True).returncode != 0  # hidden
    assert gpu_pack.open_namespace(site) and not gpu_pack.open_namespace(site)
    assert subprocess.run(probe, env=env, capture_output=True).returncode == 0


def test_parts_installed_one_after_another_keep_each_others_files(tmp_path):
    """`pip install --target` replaces a top-level folder already there: the plan installs each
    part into a folder of its own and merges it, so part 5's nvidia/ keeps part 4's
    nvidia/dali (two tiny wheels sharing `nvidia/`, built here)."""
    import os
    import subprocess
    import sys
    import zipfile

    wheels = []
    for name in ("first", "second"):
        path = tmp_path / f"nv_{name}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as whl:
            whl.writestr(f"nvidia/{name}/__init__.py", "")
            info = f"nv_{name}-1.0.dist-info"
            whl.writestr(
                f"{info}/METADATA", f"Metadata-Version: 2.1\nName: nv-{name}\nVersion: 1.0\n"
            )
            whl.writestr(
                f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            )
            whl.writestr(f"{info}/RECORD", "")
        wheels.append(path)
    site = tmp_path / "site"
    script = gpu_pack.ROOT / "bench" / "gpu_plan.sh"
    install = f"source <(sed -n '/^install_wheels() {{/,/^}}/p' {script}); cd {gpu_pack.ROOT}; "
    env = {**os.environ, "PYTHON": sys.executable, "SITE": str(site)}
    for wheel in wheels:  # one call each, as the parts arrive
        subprocess.run(["bash", "-c", install + f"install_wheels {wheel}"], env=env, check=True,
                       capture_output=True)  # fmt: skip
    assert (site / "nvidia" / "first").is_dir() and (site / "nvidia" / "second").is_dir()
