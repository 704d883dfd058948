"""One merged model: the full open_clip ViT-B/32 state dict with the trained tail, plus the head.

    save_model(run_dir, trained, clip)            # writes run_dir/model.pt
    model = load_model(run_dir)
    logits = model.logits_from_images(images)      # (B, 3, 224, 224) -> (B, K)
    logits = model.as_trained().predict_logits(store)

`model.pt` holds `state_dict` (what `open_clip.create_model(model_name, **model_kwargs)`
loads with `load_state_dict`), the head, the classes with their training counts, the
preprocess the store was made with, and the training config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.errors import UserError
from heads import tensors as T
from heads.config import TrainConfig
from heads.head import make_head
from heads.trainer import TrainedModel
from shards.decode.preprocess import MEAN, STD

MODEL_FILE = "model.pt"
MODEL_FORMAT = "engine.model/1"
# open_clip's ViT-B/32 eval transform (OpenAI mean/std, bicubic resize, center crop).
DEFAULT_PREPROCESS = {
    "size": 224,
    "mean": list(MEAN),
    "std": list(STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def _uses_quick_gelu(model: nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in model.modules())


def merged_state_dict(trained: TrainedModel, clip: nn.Module) -> dict[str, torch.Tensor]:
    """clip's state dict with `visual.*` replaced by the trained visual's (k >= 1)."""
    state = {name: t.detach().cpu().clone() for name, t in clip.state_dict().items()}
    if trained.visual is not None:
        for name, t in trained.visual.state_dict().items():
            key = f"visual.{name}"
            if key not in state or state[key].shape != t.shape:
                raise ValueError(f"trained visual does not match the CLIP model at {key}")
            state[key] = t.detach().cpu().to(state[key].dtype).clone()
    return state


def save_model(run_dir, trained: TrainedModel, clip, preprocess: dict | None = None) -> Path:
    """Write `run_dir/model.pt` atomically; `clip` is the open_clip model the store was made with.

    `clip` None (k = 0 on a store whose weights are not at hand): the file holds the head
    only and predicts from feature stores, not from images.
    """
    clip = getattr(clip, "model", clip)
    path = Path(run_dir) / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "model_name": "ViT-B-32",
        "model_kwargs": {"force_quick_gelu": _uses_quick_gelu(clip)} if clip is not None else {},
        "state_dict": merged_state_dict(trained, clip) if clip is not None else None,
        "head": {
            "kind": trained.head.kind,
            "temperature": trained.head.temperature,
            "state_dict": {k: v.detach().cpu() for k, v in trained.head.state_dict().items()},
        },
        "unfreeze_last": trained.depth,
        "classes": list(trained.classes),
        "class_counts": list(trained.class_counts),
        "preprocess": dict(preprocess or DEFAULT_PREPROCESS),
        "config": trained.cfg.to_dict(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


@dataclass
class LoadedModel:
    """The merged CLIP model and head of a run, ready for inference."""

    clip: nn.Module | None  # None: a head-only model (predicts from feature stores only)
    head: nn.Module
    classes: list[str]
    class_counts: list[float]
    preprocess: dict
    config: TrainConfig
    depth: int

    @torch.no_grad()
    def logits_from_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) normalised images -> (B, K) logits: one network, no cache.

        On CUDA the ViT runs under bf16 autocast, as during feature extraction and training
        (fp32 would waste the tensor cores); the head always runs in fp32.
        """
        if self.clip is None:
            raise UserError(
                "this model.pt holds only the head (the feature store's weights were not at "
                "hand when it was trained): predict from a feature store, or retrain with "
                "--weights FILE for a model that reads images"
            )
        device = images.device
        with T.autocast(device):
            features = self.clip.encode_image(images).float()  # (B, 512)
        with T.fp32(device):
            return self.head(features)  # (B, K)

    def as_trained(self) -> TrainedModel:
        """The same weights as a `TrainedModel`, to predict from a feature store."""
        return TrainedModel(
            head=self.head,
            depth=self.depth,
            classes=self.classes,
            cfg=self.config,
            visual=self.clip.visual if self.depth > 0 and self.clip is not None else None,
            class_counts=self.class_counts,
        )

    @property
    def fallback_class(self) -> int:
        """The most frequent training class: the prediction for an unreadable file."""
        counts = self.class_counts or [0.0]
        return int(max(range(len(counts)), key=counts.__getitem__))

    def to(self, device) -> LoadedModel:
        if self.clip is not None:
            self.clip.to(device)
        self.head.to(device)
        return self


def load_model(run_dir, device: str = "cpu") -> LoadedModel:
    """Load `model.pt` from a run folder (or the file itself)."""
    import open_clip

    path = Path(run_dir)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.exists():
        raise UserError(f"no model at {path}; train one with `engine train --out {path.parent}`")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not an engine model (format {payload.get('format')!r})")
    clip = None
    if payload["state_dict"] is not None:  # None: head only (see save_model)
        clip = open_clip.create_model(
            payload["model_name"], pretrained=None, **payload["model_kwargs"]
        )
        clip.load_state_dict(payload["state_dict"])
        clip = clip.eval()
    info = payload["head"]
    head = make_head(info["kind"], len(payload["classes"]), temperature=info["temperature"])
    head.load_state_dict(info["state_dict"])
    model = LoadedModel(
        clip=clip,
        head=head.eval(),
        classes=payload["classes"],
        class_counts=payload["class_counts"],
        preprocess=payload["preprocess"],
        config=TrainConfig.from_dict(payload["config"]),
        depth=int(payload["unfreeze_last"]),
    )
    return model.to(device)
