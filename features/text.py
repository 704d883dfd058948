"""Class-name text embeddings (prompt ensemble) for zero-shot heads and label screening.

weights = class_text_embeddings(clip, ["Quercus robur", "Vulpes vulpes"])  # (2, 512)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A small ensemble in the spirit of CLIP's ImageNet prompts, worded for species photos taken
# by the public (close-ups, wild settings, poor quality); averaging several prompts beats any
# single one by a point or two of zero-shot accuracy in CLIP's paper.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {} in the wild.",
    "a photo of a {}, a type of plant or animal.",
    "a blurry photo of a {}.",
    "a cropped photo of the {}.",
)


def prompt_name(class_name: str) -> str:
    """Folder name -> words for a prompt ("quercus_robur" -> "quercus robur")."""
    return " ".join(class_name.replace("_", " ").replace("-", " ").split())


@torch.no_grad()
def class_text_embeddings(
    clip,
    class_names: list[str],
    templates: tuple[str, ...] | list[str] | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised prompt-ensemble embedding of each class name.

    Args:
        clip: a `LoadedClip` (model + tokenizer).
        class_names: K class (folder) names; underscores become spaces.
        templates: prompts with one `{}`; default `TEMPLATES`.
        batch_size: prompts per text-encoder call.

    Returns:
        (K, 512) float32 on the CPU, each row of unit norm.
    """
    templates = tuple(templates or TEMPLATES)
    if not class_names:
        raise ValueError("class_names is empty")
    if any("{}" not in t for t in templates):
        raise ValueError(f"every template needs a '{{}}' placeholder, got {templates}")
    prompts = [t.format(prompt_name(name)) for name in class_names for t in templates]
    device = next(clip.model.parameters()).device
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = clip.tokenizer(prompts[start : start + batch_size]).to(device)  # (b, 77)
        chunks.append(F.normalize(clip.model.encode_text(tokens).float(), dim=-1).cpu())
    per_prompt = torch.cat(chunks).view(len(class_names), len(templates), -1)  # (K, T, 512)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)  # (K, 512)
