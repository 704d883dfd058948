"""One writer per output folder (issue 14, item 6): `engine.lock` and the commands using it.

A second process holds the lock for real (flock is per open file, so a thread would not do):
`holder()` starts `python -c` that takes the lock, says so, and waits for its stdin to close.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from clip_helpers import write_images
from test_os_errors import assert_one_error_line
from test_train_cli import _store

from engine.cli import main
from engine.errors import UserError
from engine.lock import holder_pid, lock_path, output_lock

ROOT = Path(__file__).resolve().parents[1]

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.lock import output_lock
    from shards.config import ShardConfig
    from shards.writer import pack

    out, src, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    with output_lock(out, wait=False):
        if src:
            pack(Path(src), out, ShardConfig(workers=1))
        print("held", flush=True)
        if seconds:
            time.sleep(seconds)
        else:
            sys.stdin.read()
    """
)


def holder(folder: Path, src: Path | None = None, seconds: float = 0.0) -> subprocess.Popen:
    """Another process holding `folder`'s lock (having packed `src` into it, if given)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(src or ""), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline() == "held\n"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_lock_names_its_holder_and_dies_with_it(tmp_path):
    folder = tmp_path / "out"
    proc = holder(folder)
    assert holder_pid(folder) == proc.pid
    with pytest.raises(UserError, match=f"PID {proc.pid}"), output_lock(folder, wait=False):
        pass
    proc.kill()  # SIGKILL: no cleanup ran, the lock file is still there ...
    proc.wait()
    assert lock_path(folder).exists()
    with output_lock(folder, wait=False):  # ... but the kernel released the lock with it
        assert holder_pid(folder) == os.getpid()
        with output_lock(folder, wait=False):  # re-entrant in one process
            pass
    assert not lock_path(folder).exists()


def test_waiting_lock_gets_it_when_the_holder_lets_go(tmp_path):
    folder = tmp_path / "out"
    proc = holder(folder, seconds=1.0)
    start = time.monotonic()
    with output_lock(folder, wait=True):
        assert time.monotonic() - start > 0.5 and holder_pid(folder) == os.getpid()
    assert proc.wait(timeout=60) == 0


@pytest.fixture
def images(tmp_path) -> Path:
    write_images(tmp_path / "images", {"0000": 3, "0001": 3})
    return tmp_path / "images"


def test_second_shard_force_refuses_and_deletes_nothing(images, tmp_path):
    out = tmp_path / "shards"
    proc = holder(out, src=images)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    try:
        result = invoke("shard", images, "--out", out, "--force")
        assert_one_error_line(result, "shard folder", str(out), f"PID {proc.pid}")
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    finally:
        release(proc)


def test_second_shard_waits_then_reuses_the_first_ones_work(images, tmp_path, caplog):
    out = tmp_path / "shards"
    proc = holder(out, src=images, seconds=1.0)
    tar = out / "shard-000000.tar"
    stamp = (tar.stat().st_ino, tar.stat().st_mtime_ns)
    with caplog.at_level(logging.INFO, logger="engine.lock"):
        result = invoke("shard", images, "--out", out)  # no --force: waits for the holder
    assert result.exit_code == 0, result.output
    assert f"waiting for PID {proc.pid}" in caplog.text
    assert (tar.stat().st_ino, tar.stat().st_mtime_ns) == stamp  # not packed again
    assert result.stdout.startswith("6 images in 1 shards")
    assert proc.wait(timeout=60) == 0


def test_features_force_refuses_while_another_writes_the_store(images, tmp_path):
    assert invoke("shard", images, "--out", tmp_path / "shards").exit_code == 0
    store = tmp_path / "train.zarr"
    proc = holder(store)
    try:
        result = invoke("features", tmp_path / "shards", "--out", store, "--force")
        assert_one_error_line(result, "feature store", f"PID {proc.pid}")
        assert not store.exists()
    finally:
        release(proc)


def test_train_refuses_a_run_folder_another_process_writes(tmp_path):
    store, _ = _store(tmp_path)
    run = tmp_path / "runs" / "exp"
    proc = holder(run)
    try:
        result = invoke("train", "--features", store, "--rounds", 0, "--out", run)
        assert_one_error_line(result, "run folder", f"PID {proc.pid}")
        assert not (run / "config.json").exists()
    finally:
        release(proc)


def test_ctrl_c_on_shard_is_one_line_and_resumes(tmp_path):
    """Ctrl-C reaches the parent and its workers (one process group); workers ignore it, the
    parent stops them and prints one line, exit 130; running again finishes the job."""
    write_images(tmp_path / "images", {"0000": 20, "0001": 20})
    out = tmp_path / "shards"
    args = [sys.executable, "-m", "engine", "shard", "images", "--out", "shards"]
    args += ["--workers", "2", "--shard-size", "8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ENGINE_FAULT_AT": "shard-file:12"}
    env["ENGINE_FAULT_SIGNAL"] = "INT"
    proc = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, start_new_session=True
    )
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()]
    messages = [line for line in lines if not line.startswith("shard:")]  # the progress bar
    assert len(messages) == 1 and messages[0].startswith("Aborted: interrupted"), lines
    assert not (out / "manifest.json").exists() and (out / "shard-000000.tar").exists()
    del env["ENGINE_FAULT_AT"]
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming after 1 finished shards" in again.stderr
    assert again.stdout.startswith("40 images in 5 shards")
