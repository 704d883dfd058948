"""Loading ViT-B/32: random weights stamped, checkpoint files hashed, offline errors clear."""

from __future__ import annotations

import copy
import hashlib
import types
import warnings

import pytest
import torch
from clip_helpers import shared_random_clip

from engine.errors import UserError
from features.model import (
    MODEL_NAME,
    cached_openai_weights,
    file_sha256,
    load_clip,
    openai_weights_cached,
)
from features.text import TEMPLATES, class_text_embeddings, prompt_name

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def clip():
    return shared_random_clip()


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def test_random_weights_are_stamped_and_reproducible(clip, image):
    assert clip.weights_info == {"name": "random", "sha256": None}
    assert clip.model_name == MODEL_NAME
    assert not clip.model.training
    # QuickGELU, as OpenAI trained ViT-B/32 (open_clip's plain config would use nn.GELU).
    assert type(clip.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    again = load_clip("random")  # every rank must build the same "random" model
    for (name, a), b in zip(
        clip.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.fixture(scope="module")
def weights_file(clip, tmp_path_factory):
    """A ViT-B/32 state dict distinguishable from the seeded random weights, saved once."""
    state = {k: v.clone() for k, v in clip.model.state_dict().items()}
    state["visual.proj"] += 0.5
    path = tmp_path_factory.mktemp("weights") / "my-ViT-B-32.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def perturbed(weights_file):
    return load_clip(str(weights_file))


def test_state_dict_file_is_loaded_and_hashed(clip, perturbed, weights_file, image):
    assert perturbed.weights_info == {
        "name": "my-ViT-B-32.pt",
        "sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(),
    }
    assert file_sha256(weights_file) == perturbed.weights_info["sha256"]
    reference = copy.deepcopy(clip.model)
    reference.load_state_dict(torch.load(weights_file))
    with torch.no_grad():
        torch.testing.assert_close(
            perturbed.model.encode_image(image), reference.encode_image(image), rtol=0, atol=0
        )
    torch.testing.assert_close(perturbed.model.visual.proj, clip.model.visual.proj + 0.5)


def test_openai_torchscript_file_is_loaded(perturbed, tmp_path):
    """OpenAI ships ViT-B-32.pt as TorchScript, which torch.load(weights_only=True) refuses."""
    model = perturbed.model
    # The cheapest trace that still archives every parameter under CLIP's names.
    model.scale_only = types.MethodType(lambda self, x: x * self.logit_scale, model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.trace_module(
                model, {"scale_only": torch.ones(1)}, check_trace=False
            )
    finally:
        del model.scale_only
    path = tmp_path / "ViT-B-32.pt"
    scripted.save(str(path))
    del scripted
    loaded = load_clip(str(path))
    assert loaded.weights_info == {"name": "ViT-B-32.pt", "sha256": file_sha256(path)}
    expected = model.state_dict()
    for name, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)


def test_missing_or_wrong_weight_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="weights file not found: .*nope.pt"):
        load_clip(str(tmp_path / "nope.pt"))
    bad = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(2)}, bad)
    with pytest.raises(UserError, match=r"resnet\.pt is not a ViT-B/32 CLIP checkpoint"):
        load_clip(str(bad))


def test_offline_openai_without_cache_says_where_to_put_the_file(monkeypatch, tmp_path):
    import open_clip.pretrained

    def offline(cfg, cache_dir=None, **kwargs):  # what open_clip raises with no network
        raise FileNotFoundError(
            "Failed to download file (open_clip_pytorch_model.bin) for "
            "timm/vit_base_patch32_clip_224.openai. Last error: cannot find the requested "
            "files in the local cache"
        )

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    assert not openai_weights_cached(str(tmp_path))  # an empty cache
    with pytest.raises(UserError) as err:
        load_clip("openai", cache_dir=str(tmp_path))
    message = str(err.value)
    assert "--weights /path/to/ViT-B-32.pt" in message
    assert "timm/vit_base_patch32_clip_224.openai" in message
    assert str(tmp_path) in message and "HF_HUB_CACHE" in message


def test_offline_is_detected_at_once_without_hub_retries(monkeypatch, tmp_path):
    """A host name that does not resolve means offline: no ~55 s of download retries."""
    import socket

    import open_clip.pretrained

    def unresolvable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    def must_not_download(*args, **kwargs):
        raise AssertionError("download attempted although the hub cannot be resolved")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", must_not_download)
    with pytest.raises(UserError, match="Name or service not known") as err:
        load_clip("openai", cache_dir=str(tmp_path))
    assert "--weights /path/to/ViT-B-32.pt" in str(err.value)


def test_openai_weights_are_found_in_open_clips_cache_offline(
    monkeypatch, clip, weights_file, tmp_path
):
    """A file open_clip cached earlier (HF hub layout) is used without asking the network."""
    import open_clip.pretrained

    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be asked when the file is cached")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_network)
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    cached = snapshot / "open_clip_pytorch_model.bin"
    cached.symlink_to(weights_file)
    assert cached_openai_weights(str(tmp_path)) == str(cached)
    loaded = load_clip("openai", cache_dir=str(tmp_path))
    assert loaded.weights_info == {"name": "openai", "sha256": file_sha256(weights_file)}
    torch.testing.assert_close(loaded.model.visual.proj, clip.model.visual.proj + 0.5)


def test_openais_own_download_cache_is_found(tmp_path):
    (tmp_path / "ViT-B-32.pt").write_bytes(b"x")
    assert cached_openai_weights(str(tmp_path)) == str(tmp_path / "ViT-B-32.pt")


def test_text_embeddings_are_a_normalised_prompt_ensemble(clip):
    names = ["quercus_robur", "Vulpes-vulpes"]
    emb = class_text_embeddings(clip, names, batch_size=4)  # 12 prompts in 3 batches
    assert emb.shape == (2, 512) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    assert prompt_name("quercus_robur") == "quercus robur"
    with torch.no_grad():  # reference: one prompt at a time, averaged by hand
        per = [
            torch.nn.functional.normalize(
                clip.model.encode_text(clip.tokenizer([t.format("vulpes vulpes")])), dim=-1
            )
            for t in TEMPLATES
        ]
    manual = torch.nn.functional.normalize(torch.cat(per).mean(0), dim=-1)
    torch.testing.assert_close(emb[1], manual, rtol=1e-5, atol=1e-5)
    single = class_text_embeddings(clip, ["fox"], templates=["a photo of a {}."])
    with torch.no_grad():
        ref = clip.model.encode_text(clip.tokenizer(["a photo of a fox."]))
    torch.testing.assert_close(single, torch.nn.functional.normalize(ref, dim=-1))
    with pytest.raises(ValueError, match="placeholder"):
        class_text_embeddings(clip, ["fox"], templates=["no slot"])
