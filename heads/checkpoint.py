"""Per-epoch training checkpoints, so an interrupted `engine train` resumes where it stopped.

    ckpt = Checkpointer(run_dir / "checkpoint", cfg)
    history, start_epoch = ckpt.resume(head, tail)
    ...
    ckpt.save(epoch + 1, head, tail, optimizer, "ft", history)

Exactness: batch order and views depend only on (seed, epoch) and the learning rate only on
the step, so restoring head, tail and optimizer state reproduces the uninterrupted run.
`save_model` discards the checkpoint once `model.pt` is written. Checkpoints and models hold
only tensors and plain data and are read with `load_plain` (`torch.load(weights_only=True)`):
a file someone sent you cannot run code when it is resumed or predicted with.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import types
import zipfile
from pathlib import Path

import torch

from engine import runs as run_files
from engine.atomic import write_atomic
from engine.errors import UserError
from engine.faults import fault_point

log = logging.getLogger(__name__)

CHECKPOINT = run_files.CHECKPOINT_FILE


class Checkpointer:
    """Saves and restores `last.pt` in a folder; every method is a no-op without a folder."""

    def __init__(self, folder, cfg, inputs: str = "") -> None:
        """`inputs`: fingerprint of the training rows, targets and weights (screening output
        changes them without changing the config), so a stale checkpoint is never resumed."""
        self.folder = Path(folder) if folder is not None else None
        self.cfg = cfg.to_dict()
        self.inputs = inputs
        self.state: dict | None = None  # {} once found stale or missing
        self.batch_size: int | None = None  # the batch the run uses (a probe may pick it)

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / CHECKPOINT

    def saved(self) -> dict | None:
        """The checkpoint's state when it was made with this config and these inputs, else None."""
        if self.state is None and self.path is not None and self.path.exists():
            state = load_plain(
                self.path, "a training checkpoint", f"delete {self.path} to train from the start"
            )
            if state.get("config") == self.cfg and state.get("inputs", "") == self.inputs:
                self.state = state
            else:
                log.warning(
                    "checkpoint %s was made with another config or other targets/weights; "
                    "starting over",
                    self.path,
                )
                self.state = {}
        return self.state or None

    def resume(self, head, tail) -> tuple[list[dict], int]:
        """Load head/tail from the checkpoint; return (history so far, first epoch to run)."""
        state = self.saved()
        if state is None:
            return [], 0
        head.load_state_dict(state["head"])
        if tail is not None and state["tail"] is not None:
            with torch.no_grad():
                tail.load_state_dict(state["tail"])
        log.info("resuming from %s after epoch %d", self.path, state["epoch"])
        return list(state["history"]), int(state["epoch"])

    def load_optimizer(self, optimizer, phase: str) -> None:
        """Restore the optimizer of `phase` if the checkpoint was written in that phase."""
        if self.state and self.state["phase"] == phase:
            optimizer.load_state_dict(self.state["optimizer"])

    def save(self, epoch: int, head, tail, optimizer, phase: str, history: list[dict]) -> None:
        if self.path is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "epoch": epoch,
            "phase": phase,
            "config": self.cfg,
            "inputs": self.inputs,
            "head": head.state_dict(),
            "tail": None if tail is None else tail.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "batch_size": self.batch_size,
        }
        save_plain(self.path, state)  # atomic: a crash mid-write leaves the previous epoch
        fault_point(f"{phase}-epoch")

    def discard(self) -> None:
        """Remove the checkpoint (and its folder when that is left empty)."""
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


class _NoMemoPickler(pickle.Pickler):
    """A pickler without a memo: equal payloads give equal bytes.

    The memo writes a second reference to the *same object* as a back-reference and an equal
    but distinct object in full, so two equal payloads pickled differently when one shared a
    string (a config value that came from a literal, say) and the other held a copy: model.pt
    re-made from config.json had equal tensors but other bytes. Payloads here are trees of
    tensors and plain data (no cycles, which fast mode refuses), and torch names each storage
    by the order it meets it, so the bytes depend on the values and the dict order only.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fast = True


_DETERMINISTIC_PICKLE = types.SimpleNamespace(Pickler=_NoMemoPickler, __name__="pickle")


def save_plain(path: Path, payload: dict) -> Path:
    """`torch.save` a dict of tensors and plain data atomically (`engine.atomic`), with the
    same bytes for the same values (`_NoMemoPickler`): checksums of re-made models agree."""
    return write_atomic(path, lambda f: torch.save(payload, f, pickle_module=_DETERMINISTIC_PICKLE))


def load_plain(path: Path, what: str, remedy: str) -> dict:
    """A `torch.save`d dict of tensors and plain data, read with `weights_only=True`.

    Args:
        path: the file.
        what: what it should be, for the message ("an engine model").
        remedy: what to do when it cannot be read.

    Raises:
        UserError: one line, when the file is truncated or corrupt, is not a dict, or holds
            any object other than tensors and plain data (refused, never constructed).
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _unsupported_global(str(err))
        raise UserError(
            f"{path} is not {what}: it holds {refused}, which loading would construct (and "
            f"could run code), so it is refused; {remedy}"
        ) from err
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as err:
        reason = " ".join(str(err).split()).split(". ")[0][:160] or type(err).__name__
        raise UserError(f"{path} is not {what}: truncated or corrupt ({reason}); {remedy}") from err
    if not isinstance(payload, dict):
        raise UserError(f"{path} is not {what}: it holds a {type(payload).__name__}; {remedy}")
    return payload


def _unsupported_global(message: str) -> str:
    """The object torch's weights-only unpickler refused, from its (many-line) message."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    return f"the object {found.group(1)}" if found else "objects other than tensors and plain data"


def fingerprint(*arrays) -> str:
    """Short sha256 over the bytes of numpy arrays (rows, targets, weights of a fit)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()[:16]
