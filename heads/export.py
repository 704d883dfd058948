"""One merged model: the visual tower of ViT-B/32 with the trained tail, plus the head.

    save_model(run_dir, trained, clip)            # writes run_dir/model.pt
    model = load_model(run_dir)
    logits = model.logits_from_images(images)      # (B, 3, 224, 224) -> (B, K)
    logits = model.as_trained().predict_logits(store)

`model.pt` (format `engine.model/2`) holds `visual_state_dict`, what
`open_clip.create_model(model_name, **model_kwargs).visual` loads with `load_state_dict`,
stored in fp16 (176 MB instead of 605 MB for the whole CLIP in fp32: the text tower is not
needed to classify images); the head in fp32 (it is small); the classes with their training
counts; the preprocess the store was made with; and the training config. Only tensors and
plain data: it is loaded with `torch.load(weights_only=True)`, so a file that carries any
other object is refused instead of run. The tower is loaded back in fp32; fp16 storage moves
the logits (cosines / temperature 0.05) by at most 0.01 (tests/test_heads_export.py; 9e-4
measured on random ViT-B/32 weights, images through the whole tower). A head-only model trained without the CLIP weights has no
tower (`visual_state_dict` None) and predicts from feature stores only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine import runs as run_files
from engine.errors import UserError
from features.split import split_visual
from heads import tensors as T
from heads.checkpoint import load_plain, save_plain
from heads.config import TrainConfig
from heads.head import make_head
from heads.trainer import TrainedModel
from shards.decode.preprocess import MEAN, STD

MODEL_FILE = run_files.MODEL
MODEL_FORMAT = "engine.model/2"
OLD_MODEL_FORMAT = "engine.model/1"  # the whole CLIP in fp32: refused with a one-line reason
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


def _visual_state(trained: TrainedModel, clip) -> dict[str, torch.Tensor] | None:
    """The visual tower's weights, trained tail merged in, stored fp16 (see the module doc)."""
    if trained.tail is not None:
        state = trained.visual_state_dict()
    elif clip is not None:
        state = clip.state_dict()
    else:
        return None  # head only, no tower given: the model predicts from feature stores
    return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in state.items()}


def save_model(run_dir, trained: TrainedModel, clip=None, preprocess: dict | None = None) -> Path:
    """Write `run_dir/model.pt` atomically, then drop the run's training checkpoint.

    Args:
        run_dir: the run folder.
        trained: what `heads.trainer.fit` returned.
        clip: the open_clip model (or its visual tower) the store was made with; needed for a
            head-only (k = 0) model to predict from images, not needed for k >= 1.
        preprocess: the store's preprocess attribute (default: open_clip's ViT-B/32 eval one).
    """
    if clip is not None:  # a LoadedClip, an open_clip CLIP model or its visual tower
        clip = getattr(getattr(clip, "model", clip), "visual", getattr(clip, "model", clip))
    visual = trained.visual if trained.visual is not None else clip
    path = Path(run_dir) / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "model_name": "ViT-B-32",
        "model_kwargs": {"force_quick_gelu": visual is not None and _uses_quick_gelu(visual)},
        "visual_state_dict": _visual_state(trained, clip),
        "head": {
            "kind": trained.head.kind,
            "temperature": trained.head.temperature,
            "state_dict": {k: v.detach().cpu() for k, v in trained.head.state_dict().items()},
        },
        "unfreeze_last": trained.depth,
        "classes": list(trained.classes),
        "class_counts": [float(c) for c in trained.class_counts],
        "preprocess": dict(preprocess or DEFAULT_PREPROCESS),
        "config": trained.cfg.to_dict(),
    }
    save_plain(path, payload)
    if trained.checkpoint is not None:
        trained.checkpoint.discard()  # the finished model makes the resume point useless
    return path


@dataclass
class LoadedModel:
    """The merged visual tower and head of a run, ready for inference."""

    visual: nn.Module | None  # open_clip VisionTransformer; None: a head-only model, no tower
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
        if self.visual is None:
            raise UserError(
                "this model was trained head-only without the CLIP weights and holds no image "
                "tower; predict from a feature store, or train with --weights to get one"
            )
        device = images.device
        with T.autocast(device):
            features = self.visual(images).float()  # (B, 512)
        with T.fp32(device):
            return self.head(features)  # (B, K)

    def as_trained(self) -> TrainedModel:
        """The same weights as a `TrainedModel`, to predict from a feature store."""
        tail = split_visual(self.visual, self.depth)[1] if self.depth > 0 else None
        return TrainedModel(
            head=self.head,
            depth=self.depth,
            classes=self.classes,
            cfg=self.config,
            visual=self.visual if self.depth > 0 else None,
            tail=tail,
            class_counts=self.class_counts,
        )

    @property
    def fallback_class(self) -> int:
        """The most frequent training class: the prediction for an unreadable file."""
        counts = self.class_counts or [0.0]
        return int(max(range(len(counts)), key=counts.__getitem__))

    def to(self, device) -> LoadedModel:
        if self.visual is not None:
            self.visual.to(device)
        self.head.to(device)
        return self


def _visual_from(payload: dict) -> nn.Module | None:
    """The fp32 visual tower of a payload (None for a head-only model without one)."""
    import open_clip

    state = payload.get("visual_state_dict")
    if state is None:
        return None
    # On the meta device: no memory and no random init for the text tower (dropped) or for
    # the visual weights (replaced right away by the stored ones).
    clip = open_clip.create_model(
        payload["model_name"], pretrained=None, device="meta", **payload["model_kwargs"]
    )
    visual = clip.visual
    visual.load_state_dict(state, assign=True)  # strict: every key, every shape
    return visual.float().eval()


def load_model(run_dir, device: str = "cpu") -> LoadedModel:
    """Load `model.pt` from a run folder (or the file itself); tensors and plain data only."""
    path = Path(run_dir)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.exists():
        raise UserError(f"no model at {path}; train one with `engine train --out {path.parent}`")
    payload = load_plain(path, "an engine model", "train it again with `engine train`")
    if payload.get("format") == OLD_MODEL_FORMAT:
        raise UserError(
            f"{path} was written by an older engine (whole CLIP in fp32, {OLD_MODEL_FORMAT}); "
            "train it again with `engine train` to get the 176 MB fp16 model"
        )
    if payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not an engine model (format {payload.get('format')!r})")
    info = payload["head"]
    head = make_head(info["kind"], len(payload["classes"]), temperature=info["temperature"])
    head.load_state_dict(info["state_dict"])
    model = LoadedModel(
        visual=_visual_from(payload),
        head=head.eval(),
        classes=payload["classes"],
        class_counts=payload["class_counts"],
        preprocess=payload["preprocess"],
        config=TrainConfig.from_dict(payload["config"]),
        depth=int(payload["unfreeze_last"]),
    )
    return model.to(device)
