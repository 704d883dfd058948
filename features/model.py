"""Load CLIP ViT-B/32 through open_clip, with its weights named and hashed.

    clip = load_clip("openai")            # open_clip's own download and cache
    clip = load_clip("/data/ViT-B-32.pt") # OpenAI's TorchScript file or an open_clip/HF state dict
    clip = load_clip("random")            # tests and the demo; stamped "random" everywhere

The architecture is always ViT-B/32 with QuickGELU, the activation OpenAI trained with:
open_clip's plain `ViT-B-32` config uses nn.GELU and only warns when OpenAI weights are loaded
into it, which silently shifts every activation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from huggingface_hub import constants, try_to_load_from_cache
from open_clip import load_checkpoint
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from torch import nn

from engine.errors import UserError

log = logging.getLogger(__name__)

MODEL_NAME = "ViT-B-32"
OPENAI_TAG = "openai"
RANDOM = "random"
RANDOM_SEED = 0  # fixed so every rank (and every test) builds the same random weights
# Keys of OpenAI's TorchScript state dict that are not parameters of open_clip's CLIP.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class LoadedClip:
    """A CLIP model in eval mode with what downstream stages need to know about it.

    Attributes:
        model: the open_clip `CLIP` module (fp32, eval mode).
        tokenizer: open_clip tokenizer for the text tower (None for tiny test models).
        weights_info: `{"name": "openai" | file name | "random", "sha256": hex or None}`.
        model_name: architecture name written into stores ("ViT-B-32").
        preprocess: open_clip's eval transform (PIL image -> (3, 224, 224) tensor).
    """

    model: nn.Module
    tokenizer: Any
    weights_info: dict
    model_name: str = MODEL_NAME
    preprocess: Any = field(default=None, repr=False)


def load_clip(weights: str = OPENAI_TAG, device: str = "cpu", cache_dir: str | None = None):
    """Build ViT-B/32 and load `weights` into it.

    Args:
        weights: "openai", a checkpoint path, or "random".
        device: torch device for the model.
        cache_dir: open_clip download cache (default: the Hugging Face hub cache).

    Returns:
        A `LoadedClip` in eval mode.

    Raises:
        UserError: the file is missing or not a ViT-B/32 checkpoint, or "openai" cannot be
            downloaded (offline) and is not cached.
    """

    path = _weights_file(weights, cache_dir)  # before the ~10 s model build: fail fast
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = open_clip.create_model(MODEL_NAME, pretrained=None, force_quick_gelu=True)
    if path is None:
        log.warning("using RANDOM weights: outputs are stamped 'random' and mean nothing")
        info = {"name": RANDOM, "sha256": None}
    else:
        _load_weights(model, path)
        name = OPENAI_TAG if weights == OPENAI_TAG else Path(path).name
        info = {"name": name, "sha256": file_sha256(path)}
    model = model.to(device).eval()
    preprocess = open_clip.image_transform(
        model.visual.image_size,
        is_train=False,
        mean=open_clip.OPENAI_DATASET_MEAN,
        std=open_clip.OPENAI_DATASET_STD,
    )
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    return LoadedClip(model, tokenizer, info, MODEL_NAME, preprocess)


def _weights_file(weights: str, cache_dir: str | None) -> str | Path | None:
    """The checkpoint file `weights` names (None for random weights)."""
    if weights == RANDOM:
        return None
    if weights == OPENAI_TAG:
        # A cached copy is used as is: asking the hub first costs ~1 min of retries offline.
        return cached_openai_weights(cache_dir) or _download_openai(cache_dir)
    path = Path(weights)
    if not path.is_file():
        raise UserError(
            f"weights file not found: {weights}; pass 'openai', 'random' or the path of "
            "a ViT-B/32 checkpoint (e.g. OpenAI's ViT-B-32.pt)"
        )
    return path


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def cached_openai_weights(cache_dir: str | None = None) -> str | None:
    """Path of OpenAI's ViT-B/32 weights already in open_clip's caches, else None.

    Looks where `open_clip` puts them, without the network: the Hugging Face hub cache
    (`timm/vit_base_patch32_clip_224.openai`, safetensors or .bin) and `~/.cache/clip`
    (OpenAI's own `ViT-B-32.pt`, open_clip's URL download).
    """

    pretrained_cfg = open_clip.pretrained.get_pretrained_cfg(MODEL_NAME, OPENAI_TAG)
    repo = pretrained_cfg.get("hf_hub", "").rstrip("/")
    for name in (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME):
        found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    url_name = os.path.basename(pretrained_cfg.get("url", ""))
    url_cache = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / url_name
    return str(url_cache) if url_name and url_cache.is_file() else None


def openai_weights_cached(cache_dir: str | None = None) -> bool:
    """Whether `load_clip("openai")` would work offline."""
    return cached_openai_weights(cache_dir) is not None


def _download_openai(cache_dir: str | None) -> str:
    """Path of OpenAI's ViT-B/32 weights in open_clip's cache, downloading them if needed."""

    pretrained_cfg = open_clip.pretrained.get_pretrained_cfg(MODEL_NAME, OPENAI_TAG)
    try:
        _check_hub_reachable()
        return open_clip.pretrained.download_pretrained(pretrained_cfg, cache_dir=cache_dir)
    except OSError as err:  # offline: hf_hub / urllib raise OSError subclasses
        hub = pretrained_cfg.get("hf_hub", "").rstrip("/")
        cache = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
        raise UserError(
            "cannot download the OpenAI ViT-B/32 weights (offline?) and they are not cached: "
            f"{err}. Either pass the file: --weights /path/to/ViT-B-32.pt (OpenAI's "
            f"{pretrained_cfg.get('url', 'ViT-B-32.pt')}), or put open_clip's copy of "
            f"'{hub}' in the Hugging Face cache {cache} (set HF_HUB_CACHE to move it)"
        ) from err


def _check_hub_reachable() -> None:
    """Fail at once when the hub's host name does not resolve (offline machine), instead of
    after the hub client's ~55 s of retries with back-off.

    Raises:
        OSError: (socket.gaierror) the host cannot be resolved.
    """

    socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)


def _load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load OpenAI's TorchScript file or an open_clip / HF state dict into `model`."""

    try:
        with warnings.catch_warnings():  # torch's note on a pickle's protocol: noise here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            _load_weights_file(model, path, load_checkpoint)
    except pickle.UnpicklingError:
        # torch.load(weights_only=True) refused objects other than tensors; its own message
        # advises weights_only=False, i.e. running the file's code: never what to do here.
        raise UserError(
            f"{path} is not a ViT-B/32 checkpoint: it holds Python objects other than tensors "
            "(or is not a checkpoint at all), and weights are never loaded by running a "
            "file's code; pass OpenAI's ViT-B-32.pt or an open_clip ViT-B-32 state dict"
        ) from None
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(
            f"{path} is not a ViT-B/32 CLIP checkpoint ({type(err).__name__}: "
            f"{str(err)[:300]}); pass OpenAI's ViT-B-32.pt or an open_clip ViT-B-32 state dict"
        ) from err


def _load_weights_file(model: nn.Module, path, load_checkpoint) -> None:
    """The TorchScript or state-dict load itself (errors translated by `_load_weights`)."""
    state_dict = _openai_jit_state_dict(path)
    if state_dict is None:
        load_checkpoint(model, str(path), strict=True)
        return
    # TorchScript also saves buffers open_clip registers as non-persistent (attn_mask).
    transient = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    for key in transient:
        state_dict.pop(key, None)
    model.load_state_dict(state_dict, strict=True)


def _openai_jit_state_dict(path: str | os.PathLike) -> dict | None:
    """State dict of an OpenAI TorchScript archive, or None when `path` is not one.

    OpenAI ships ViT-B-32.pt as TorchScript; torch.load refuses it with weights_only=True, so
    it is opened with torch.jit.load (as open_clip's `load_openai_model` does).
    """

    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        if not any(name.endswith("constants.pkl") for name in archive.namelist()):
            return None  # an ordinary torch.save zip
    scripted = torch.jit.load(str(path), map_location="cpu")
    state_dict = dict(scripted.state_dict())  # fp16; load_state_dict casts to fp32
    for key in _OPENAI_EXTRA_KEYS:
        state_dict.pop(key, None)
    return state_dict
