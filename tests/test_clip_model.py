"""CLIP features equal transformers' CLIPModel for every layout tapkit loads (open_clip
hub folder, transformers folder, bare OpenAI-format state dict), for QuickGELU and GELU."""

import json

import pytest
import torch

import tapkit
from tapkit.models.clip.hf_naming import hf_to_openai
from tapkit.testing import randomize, train_clip_vocab

transformers = pytest.importorskip("transformers")

# Bare state dicts record no head counts: OpenAI's rule (64-wide heads) must give them back.
VISION = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2, image_size=40, patch_size=8)
TEXT_WIDTH, TEXT_HEADS = 64, 1


def hf_clip(vocab_size: int, act: str, seed: int = 0):
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=TEXT_HEADS, max_position_embeddings=16, hidden_act=act,
                         eos_token_id=vocab_size - 1, bos_token_id=vocab_size - 2, pad_token_id=0),
        vision_config=dict(hidden_act=act, **VISION), projection_dim=24)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(cfg).eval()
    randomize(model, seed, scale=0.3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name:  # keep norms near the identity, as trained ones are
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.5)
    return model


def open_clip_config(act: str) -> dict:
    return {"model_cfg": {"embed_dim": 24, "quick_gelu": act == "quick_gelu",
                          "vision_cfg": {"image_size": 40, "layers": 3, "width": 128, "patch_size": 8, "head_width": 64,
                                         "mlp_ratio": 2.0},
                          "text_cfg": {"context_length": 16, "vocab_size": 0, "width": TEXT_WIDTH, "heads": TEXT_HEADS,
                                       "layers": 2, "mlp_ratio": 2.5}},
            "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    return train_clip_vocab(tmp_path_factory.mktemp("clip_vocab"))


def write_layout(layout: str, hf, act: str, vocab_dir, root):
    """Writes `hf`'s weights in `layout`; returns load_clip's arguments."""
    openai = hf_to_openai(hf.state_dict())
    if layout == "transformers":
        folder = root / "hf"
        hf.save_pretrained(folder)
        for name in ("vocab.json", "merges.txt"):
            (folder / name).write_text((vocab_dir / name).read_text())
        return dict(path=folder)
    if layout == "open_clip":
        from safetensors.torch import save_file

        folder = root / "oc"
        folder.mkdir()
        cfg = open_clip_config(act)
        cfg["model_cfg"]["text_cfg"]["vocab_size"] = hf.config.text_config.vocab_size
        (folder / "open_clip_config.json").write_text(json.dumps(cfg))
        save_file({k: v.contiguous() for k, v in openai.items()}, str(folder / "open_clip_model.safetensors"))
        for name in ("vocab.json", "merges.txt"):
            (folder / name).write_text((vocab_dir / name).read_text())
        return dict(path=folder)
    if layout == "state_dict_pt":
        torch.save(openai, root / "clip.pt")
        return dict(path=root / "clip.pt", tokenizer=vocab_dir, quick_gelu=act == "quick_gelu")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in openai.items()}, str(root / "clip.safetensors"))
    return dict(path=root / "clip.safetensors", tokenizer=vocab_dir, quick_gelu=act == "quick_gelu")


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("layout", ["open_clip", "transformers", "state_dict_pt", "state_dict_safetensors"])
def test_features_equal_transformers(layout, act, vocab_dir, tmp_path):
    vocab_size = len(json.loads((vocab_dir / "vocab.json").read_text()))
    hf = hf_clip(vocab_size, act)
    clip = tapkit.load_clip(**write_layout(layout, hf, act, vocab_dir, tmp_path))
    assert clip.model.cfg.quick_gelu == (act == "quick_gelu")
    assert (clip.model.visual.heads, clip.model.visual.grid_size, clip.embed_dim) == (2, 5, 24)

    pixels = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    tokens = clip.tokenize(["a small red circle left of a blue star", "", "purple hexagon!" * 9])
    with torch.no_grad():
        ref_image = hf.get_image_features(pixel_values=pixels)
        ref_text = hf.get_text_features(input_ids=tokens)
        ref_image = getattr(ref_image, "pooler_output", ref_image)
        ref_text = getattr(ref_text, "pooler_output", ref_text)
        ours_image, ours_text = clip.model.encode_image(pixels), clip.model.encode_text(tokens)
    assert ref_image.abs().max() > 0.1 and ref_text.abs().max() > 0.1
    assert torch.allclose(ours_image, ref_image, atol=1e-5, rtol=0), (ours_image - ref_image).abs().max()
    assert torch.allclose(ours_text, ref_text, atol=1e-5, rtol=0), (ours_text - ref_text).abs().max()
    assert clip.logit_scale == pytest.approx(float(torch.tensor(2.5).exp()), rel=1e-6)


def test_block_takes_a_per_head_additive_mask():
    """SAN runs the last blocks with a (B, heads, L, L) bias: a -inf entry must cut a token off."""
    from tapkit.models.clip.transformer import ResidualAttentionBlock

    block = ResidualAttentionBlock(16, 2).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.zeros(2, 2, 5, 5)
    mask[:, :, 0, 1:] = float("-inf")  # token 0 sees only itself, on both heads
    out = block(x, mask)
    changed = x.clone()
    changed[:, 1:] += torch.randn(2, 4, 16)
    assert torch.allclose(block(changed, mask)[:, 0], out[:, 0], atol=1e-6)
    assert not torch.allclose(block(changed)[:, 0], block(x)[:, 0], atol=1e-3)


def test_encode_api_normalises_and_accepts_every_image_kind(tmp_path):
    import numpy as np
    from PIL import Image

    from tapkit.testing import make_tiny_clip

    clip = tapkit.load_clip(make_tiny_clip(tmp_path / "tiny").folder)
    text = clip.encode_text(["a red circle", "a blue star"])
    assert text.shape == (2, 24) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    array = (np.random.default_rng(0).random((45, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(array).save(tmp_path / "im.png")
    feats = clip.encode_image([array, Image.fromarray(array), tmp_path / "im.png"])
    assert feats.shape == (3, 24)
    assert torch.allclose(feats[0], feats[1], atol=1e-6) and torch.allclose(feats[0], feats[2], atol=1e-6)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert clip.preprocess(array).shape == (3, 32, 32)


def test_clip_is_a_family_recognised_by_its_tensors(tmp_path):
    from tapkit.models.clip.model import ClipModel
    from tapkit.testing import make_tiny_clip

    tiny = make_tiny_clip(tmp_path / "tiny")
    model = tapkit.load_model(tiny.folder, device="cpu")
    assert isinstance(model, ClipModel) and model.family == "clip"
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    assert isinstance(tapkit.load_model(tmp_path / "bare.pt", device="cpu"), ClipModel)
    with pytest.raises(tapkit.UserError):
        tapkit.load_model(tiny.folder, concepts=tmp_path / "x.pkl")


def test_other_image_sizes_get_a_resized_positional_grid(tmp_path):
    from tapkit.testing import make_tiny_clip

    visual = tapkit.load_clip(make_tiny_clip(tmp_path / "tiny").folder).model.visual
    assert torch.equal(visual.positional_embedding_for(4, 4), visual.positional_embedding)
    pos = visual.positional_embedding_for(8, 6)
    assert pos.shape == (1 + 48, 32) and torch.equal(pos[0], visual.positional_embedding[0])
    grid = visual.positional_embedding[1:].reshape(4, 4, 32)
    assert torch.allclose(pos[1:].reshape(8, 6, 32).mean((0, 1)), grid.mean((0, 1)), atol=0.05)
    assert visual.embed(torch.randn(2, 3, 64, 48)).shape == (2, 49, 32)
    assert visual(torch.randn(2, 3, 64, 48)).shape == (2, 24)
