"""SAN's model: shapes of every output, recognition with attention bias equal to the
released masked-attention formulation, released checkpoints (official key names, shaped
like the real ones but small) loading, and the segmenter's label map."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import tapkit
from tapkit.checkpoint.io import CheckpointError, save_safetensors
from tapkit.models.clip.config import ClipConfig, TextConfig, VisionConfig
from tapkit.models.san.build import san_from_preset
from tapkit.models.san.config import PRESETS, SanConfig, SideConfig
from tapkit.models.san.keys import config_from_released, tapkit_state_from_released
from tapkit.models.san.model import SanModel, semantic_probabilities
from tapkit.models.san.recognition import clip_features, recognize
from tapkit.testing import make_tiny_clip


def tiny_config(**kw) -> SanConfig:
    clip = ClipConfig(24, VisionConfig(32, 8, 32, 6, 4), TextConfig(16, 300, 32, 4, 2))
    base = dict(clip=clip, side=SideConfig(64, 16, 32, 3, 2, 2.0, 6), fusion=((0, 0), (1, 1), (2, 2)),
                recognition_start=3, deep_supervision=(2, 3), clip_resolution=0.5, decoder_width=16)
    base.update(kw)
    return SanConfig(**base)


def test_forward_shapes_aux_and_semantic_scores():
    torch.manual_seed(0)
    model = SanModel(tiny_config()).eval()
    classifier = model.classifier(torch.randint(1, 299, (5 * 2, 16)), 2)
    assert classifier.shape == (6, 24) and torch.allclose(classifier.norm(dim=-1), torch.ones(6))
    out = model(torch.randn(2, 3, 64, 96), classifier, aux=True)
    assert out.mask_logits.shape == (2, 6, 4, 6) and out.class_logits.shape == (2, 6, 6)
    assert len(out.aux) == 1 and out.aux[0].mask_logits.shape == (2, 6, 4, 6)
    assert set(out.clip.maps) == {0, 1, 2} and out.clip.grid == (4, 6)
    assert model(torch.randn(1, 3, 64, 64), classifier).aux == []  # eval: the last block only
    probs = semantic_probabilities(out.mask_logits, out.class_logits)
    expected = (out.class_logits.softmax(-1)[0, :, 2, None, None] * out.mask_logits[0].sigmoid()).sum(0)
    assert probs.shape == (2, 5, 4, 6) and torch.allclose(probs[0, 2], expected, atol=1e-6)


def test_recognition_equals_the_released_masked_attention():
    """SAN's code runs [extra tokens; class; patches] through each block with one mask:
    extra tokens see themselves and the patches (plus bias), nobody sees them."""
    torch.manual_seed(1)
    cfg = tiny_config()
    visual = SanModel(cfg).clip.visual.eval()
    images = torch.randn(2, 3, 32, 32)
    q, heads, length = 5, 4, 16
    bias = torch.randn(2, heads, q, 4, 4) * 3
    feats = clip_features(visual, images, set(), 3)
    ours = recognize(visual, 3, feats, bias)

    x = torch.cat([feats.tokens[:, :1].expand(-1, q, -1), feats.tokens], 1)
    n = q + 1 + length
    mask = torch.zeros(2, heads, n, n)
    mask[:, :, :, :q] = -100
    mask[:, :, torch.arange(q), torch.arange(q)] = 0
    mask[:, :, :q, q] = -100
    mask[:, :, :q, q + 1:] = bias.flatten(3)
    for block in visual.transformer.resblocks[3:]:
        x = block(x, mask)
    reference = F.normalize(visual.head(x[:, :q]), dim=-1)
    assert torch.allclose(ours, reference, atol=1e-5)


def released_state(cfg: SanConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under MendelXu/SAN's names (detectron2 SAN.state_dict()), with the
    shapes its modules give them, written out here name by name."""
    g = torch.Generator().manual_seed(seed)
    v, t, s = cfg.clip.vision, cfg.clip.text, cfg.side
    sd = {}

    def put(name, *shape):
        sd[name] = torch.randn(*shape, generator=g) * 0.05

    def clip_block(prefix, width):
        put(f"{prefix}.ln_1.weight", width), put(f"{prefix}.ln_1.bias", width)
        put(f"{prefix}.attn.in_proj_weight", 3 * width, width), put(f"{prefix}.attn.in_proj_bias", 3 * width)
        put(f"{prefix}.attn.out_proj.weight", width, width), put(f"{prefix}.attn.out_proj.bias", width)
        put(f"{prefix}.ln_2.weight", width), put(f"{prefix}.ln_2.bias", width)
        put(f"{prefix}.mlp.c_fc.weight", 4 * width, width), put(f"{prefix}.mlp.c_fc.bias", 4 * width)
        put(f"{prefix}.mlp.c_proj.weight", width, 4 * width), put(f"{prefix}.mlp.c_proj.bias", width)

    put("clip_visual_extractor.conv1.weight", v.width, 3, v.patch_size, v.patch_size)
    put("clip_visual_extractor.class_embedding", v.width)
    put("clip_visual_extractor.positional_embedding", v.grid_size**2 + 1, v.width)
    put("clip_visual_extractor.ln_pre.weight", v.width), put("clip_visual_extractor.ln_pre.bias", v.width)
    for i in range(cfg.recognition_start):
        clip_block(f"clip_visual_extractor.resblocks.{i}", v.width)
    for j in range(v.layers - cfg.recognition_start):
        clip_block(f"clip_rec_head.resblocks.{j}", v.width)
    put("clip_rec_head.ln_post.weight", v.width), put("clip_rec_head.ln_post.bias", v.width)
    put("clip_rec_head.proj", v.width, cfg.clip.embed_dim)
    put("ov_classifier.token_embedding.weight", t.vocab_size, t.width)
    put("ov_classifier.positional_embedding", t.context_length, t.width)
    for i in range(t.layers):
        clip_block(f"ov_classifier.transformer.resblocks.{i}", t.width)
    put("ov_classifier.ln_final.weight", t.width), put("ov_classifier.ln_final.bias", t.width)
    put("ov_classifier.text_projection", t.width, cfg.clip.embed_dim)
    sd["ov_classifier.logit_scale"] = torch.tensor(4.6)
    put("ov_classifier.bg_embed", 1, cfg.clip.embed_dim)
    sd["criterion.empty_weight"] = torch.ones(172)
    vit = "side_adapter_network.vit_model"
    put(f"{vit}.patch_embed.proj.weight", s.width, 3, s.patch_size, s.patch_size), put(f"{vit}.patch_embed.proj.bias", s.width)
    put(f"{vit}.pos_embed", 1, s.grid_size**2, s.width)
    for i in range(s.layers):
        b = f"{vit}.blocks.{i}"
        put(f"{b}.norm1.weight", s.width), put(f"{b}.norm1.bias", s.width)
        put(f"{b}.attn.qkv.weight", 3 * s.width, s.width), put(f"{b}.attn.qkv.bias", 3 * s.width)
        put(f"{b}.attn.proj.weight", s.width, s.width), put(f"{b}.attn.proj.bias", s.width)
        put(f"{b}.norm2.weight", s.width), put(f"{b}.norm2.bias", s.width)
        put(f"{b}.mlp.fc1.weight", 4 * s.width, s.width), put(f"{b}.mlp.fc1.bias", 4 * s.width)
        put(f"{b}.mlp.fc2.weight", s.width, 4 * s.width), put(f"{b}.mlp.fc2.bias", s.width)
    put("side_adapter_network.query_embed", 1, s.num_queries, s.width)
    put("side_adapter_network.query_pos_embed", 1, s.num_queries, s.width)
    for k, _ in cfg.fusion:
        f = f"side_adapter_network.fusion_layers.layer_{k}.input_proj"
        put(f"{f}.0.weight", v.width), put(f"{f}.0.bias", v.width)
        put(f"{f}.1.weight", s.width, v.width, 1, 1), put(f"{f}.1.bias", s.width)
    w = cfg.decoder_width
    for name, out in (("query_mlp", w), ("pix_mlp", w), ("attn_mlp", w * v.heads)):
        dims = [s.width, w, w, out]
        for i in range(3):
            shape = (dims[i + 1], dims[i]) if name == "query_mlp" else (dims[i + 1], dims[i], 1, 1)
            put(f"side_adapter_network.mask_decoder.{name}.layers.{i}.weight", *shape)
            put(f"side_adapter_network.mask_decoder.{name}.layers.{i}.bias", dims[i + 1])
    put("side_adapter_network.mask_decoder.bias_scaling.weight", 1, 1)
    put("side_adapter_network.mask_decoder.bias_scaling.bias", 1)
    return sd


def small_released_config() -> SanConfig:
    """ViT-B/16 SAN's layout (12 CLIP blocks, taps 0/3/6/9, 6-head side ViT, 12 bias heads,
    OpenAI's 64-wide heads) at a small width."""
    clip = ClipConfig(32, VisionConfig(64, 16, 128, 12, 2), TextConfig(77, 500, 64, 1, 2), quick_gelu=True)
    side = SideConfig(128, 16, 48, 8, 6, 4.0, 10)
    return SanConfig(clip=clip, side=side, decoder_width=32)


def test_released_layout_loads_with_its_architecture_read_off_the_tensors(tmp_path):
    cfg = small_released_config()
    state = released_state(cfg)
    read = config_from_released(state)
    assert read.recognition_start == 9 and read.fusion == ((0, 0), (1, 3), (2, 6), (3, 9))
    assert read.side == cfg.side and read.clip.vision == cfg.clip.vision and read.clip.text == cfg.clip.text
    path = tmp_path / "san_vit_b_16.pth"
    torch.save({"model": state, "iteration": 59999}, path)
    model = tapkit.load_model(path)
    assert isinstance(model, SanModel)
    mapped = tapkit_state_from_released(state)
    own = model.state_dict()
    assert torch.equal(own["clip.visual.transformer.resblocks.10.attn.in_proj_weight"],
                       state["clip_rec_head.resblocks.1.attn.in_proj_weight"])
    assert torch.equal(own["side.blocks.7.attn.qkv.weight"], state["side_adapter_network.vit_model.blocks.7.attn.qkv.weight"])
    assert all(torch.equal(own[k], v) for k, v in mapped.items())
    out = model(torch.randn(1, 3, 128, 96), model.classifier(torch.randint(1, 400, (3 * 2, 77)), 2))
    assert out.class_logits.shape == (1, 10, 4)


def test_released_checkpoint_with_a_misfit_tensor_is_refused_in_one_line(tmp_path):
    state = released_state(small_released_config())
    state["side_adapter_network.mask_decoder.bias_scaling.weight"] = torch.zeros(2, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="bias_scaling"):
        tapkit.load_model(path)


def test_presets_are_the_released_architectures():
    b, l = PRESETS["san_vit_b_16"], PRESETS["san_vit_large_14"]
    assert (b.clip.vision.width, b.recognition_start, b.bias_heads, b.clip_resolution) == (768, 9, 12, 0.5)
    assert (l.clip.vision.width, l.recognition_start, l.bias_heads, l.clip_resolution) == (1024, 18, 16, 0.7)
    with torch.device("meta"):
        model = san_from_preset("san_vit_b_16")
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("clip."))
    assert 8.0e6 < trainable < 8.8e6  # SAN's paper: 8.4M trainable parameters (ViT-B), with the pos. embedding


def test_segmenter_label_map_in_the_given_class_order(tmp_path):
    clip = make_tiny_clip(tmp_path / "clip")
    model = SanModel(tiny_config(clip=tapkit.load_clip(clip.folder).model.cfg), tapkit.load_clip(clip.folder).model)
    folder = tmp_path / "san"
    folder.mkdir()
    save_safetensors(model.state_dict(), folder / "model.safetensors", config=model.cfg.to_dict())
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((clip.folder / name).read_bytes())
    segmenter = tapkit.load_segmenter(folder)
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    classes = ["red circle", "blue star", "background"]
    result = segmenter.segment(rgb, classes)
    probs = segmenter.probabilities(rgb, classes)
    assert result.label_map.shape == (50, 70) and result.classes == classes
    assert np.array_equal(result.label_map, probs.argmax(0).numpy())
    assert result.areas.sum() == 50 * 70 and np.all((result.scores >= 0) & (result.scores <= 1))
    flipped = segmenter.segment(rgb, classes[::-1])
    assert np.array_equal(2 - flipped.label_map, result.label_map)  # the same regions, indices follow the order
    with pytest.raises(tapkit.UserError, match="repeated"):
        segmenter.segment(rgb, ["a", "a"])


def test_clip_positional_embedding_is_resized_as_san_resizes_it():
    """SAN's resize_pos_embed2d: bicubic, align_corners False, no antialiasing."""
    torch.manual_seed(3)
    visual = SanModel(tiny_config()).clip.visual
    images = torch.randn(1, 3, 48, 40)
    feats = clip_features(visual, images, {0}, 3)
    pos = visual.positional_embedding
    grid = pos[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(6, 5), mode="bicubic", align_corners=False).flatten(2)[0].t()
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    tokens = torch.cat([visual.class_embedding.expand(1, 1, -1), x], 1) + torch.cat([pos[:1], resized])
    expected = visual.ln_pre(tokens)[:, 1:].transpose(1, 2).reshape(1, -1, 6, 5)
    assert torch.allclose(feats.maps[0], expected, atol=1e-6)


def test_files_without_the_antialias_field_keep_their_training_resize():
    cfg = tiny_config(clip_pos_antialias=False)
    d = cfg.to_dict()
    assert SanConfig.from_dict(d) == cfg
    del d["clip_pos_antialias"]
    assert SanConfig.from_dict(d).clip_pos_antialias is True
    assert tapkit.load_segmenter().model.cfg.clip_pos_antialias is False  # the packaged SAN: trained as SAN resizes
