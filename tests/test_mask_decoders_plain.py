"""The decoders' inference path (fused attention, in-place residuals, GELUs and
LayerNorm2d, the identity resize skipped) against plain re-statements of the same
arithmetic (issue 13 item 4)."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tapkit.inputs.image import ResizeInfo
from tapkit.models.inplace import upscale_embedding
from tapkit.models.sam.image_encoder import LayerNorm2d
from tapkit.models.sam.transformer import Attention as SamAttention
from tapkit.predictor.predictor import upscale_logits
from tapkit.testing import randomize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def plain_sam_attention(module: SamAttention, q, k, v):
    """segment-anything's Attention.forward, written out."""
    def heads(x):
        b, n, c = x.shape
        return x.reshape(b, n, module.num_heads, c // module.num_heads).transpose(1, 2)

    q, k, v = heads(module.q_proj(q)), heads(module.k_proj(k)), heads(module.v_proj(v))
    attn = torch.softmax(q @ k.permute(0, 1, 3, 2) / math.sqrt(q.shape[-1]), dim=-1)
    out = attn @ v
    b, _, n, _ = out.shape
    return module.out_proj(out.transpose(1, 2).reshape(b, n, module.internal_dim))


@torch.inference_mode()
def test_sam_attention_is_softmax_attention_with_a_shared_image_side():
    module = randomize(SamAttention(32, 4, downsample_rate=2), seed=1, scale=0.3)
    tokens, image = torch.randn(5, 7, 32), torch.randn(1, 64, 32)
    torch.testing.assert_close(module(tokens, image, image), plain_sam_attention(module, tokens, image.expand(5, -1, -1), image.expand(5, -1, -1)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module(image, tokens, tokens), plain_sam_attention(module, image.expand(5, -1, -1), tokens, tokens), rtol=1e-5, atol=1e-6)


def test_layer_norm_2d_in_place_is_bit_identical():
    norm = randomize(LayerNorm2d(8), seed=2)
    x = torch.randn(3, 8, 5, 6)
    expected = norm(x)  # grad on: the official, out-of-place arithmetic
    with torch.inference_mode():
        assert torch.equal(norm(x), expected.detach())
    assert x.requires_grad is False and torch.isfinite(x).all()


def test_upscaling_with_in_place_gelus_is_bit_identical_and_leaves_its_input():
    layers = nn.Sequential(nn.ConvTranspose2d(16, 4, 2, 2), LayerNorm2d(4), nn.GELU(), nn.ConvTranspose2d(4, 2, 2, 2), nn.GELU())
    randomize(layers, seed=3)
    x = torch.randn(2, 16, 4, 4)
    before = x.clone()
    with torch.inference_mode():
        assert torch.equal(upscale_embedding(layers, x), layers(x))
    assert torch.equal(x, before)


def test_identity_resize_is_skipped_with_the_same_masks():
    logits = torch.randn(3, 16, 16)
    info = ResizeInfo((48, 64), (48, 64), 1.0)
    fast = upscale_logits(logits, info, 64)
    two_step = F.interpolate(F.interpolate(logits[:, None], (64, 64), mode="bilinear", align_corners=False)[..., :48, :64],
                             (48, 64), mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(fast, two_step)


def reference_upscale(logits, info, image_size):
    """SAM's postprocess_masks written out: the whole padded square, cropped, resized."""
    (rh, rw), (oh, ow) = info.resized_size, info.original_size
    x = F.interpolate(logits[:, None], (image_size, image_size), mode="bilinear", align_corners=False)[..., :rh, :rw]
    return F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize("low, image_size", [(16, 64), (32, 64), (24, 72), (16, 80), (20, 64)])
def test_upscaling_only_the_image_part_gives_bit_identical_masks(low, image_size):
    """Only the low-resolution rows/columns that reach the resized image are upscaled;
    every resized shape (wide, tall, square, odd sizes, original larger or smaller)
    gives exactly the full square's values. (20 -> 64 is not an integer factor: the
    full path.)"""
    gen = torch.Generator().manual_seed(low + image_size)
    logits = torch.randn(2, low, low, generator=gen) * 4
    for rh, rw in [(image_size, image_size), (image_size * 3 // 4, image_size), (image_size, image_size // 2 + 1),
                   (1, image_size), (image_size - 1, 5), (image_size // 3, image_size // 3)]:
        for oh, ow in [(rh, rw), (rh * 2 + 1, rw * 2 + 3), (max(1, rh // 2), max(1, rw // 3))]:
            info = ResizeInfo((oh, ow), (rh, rw), 1.0)
            assert torch.equal(upscale_logits(logits, info, image_size), reference_upscale(logits, info, image_size)), (rh, rw, oh, ow)


@pytest.mark.parametrize("family", ["tap", "sam"])
def test_decoders_inference_path_matches_the_training_path(family, tiny_model, tiny_sam):
    """Under inference_mode the decoders add in place and reuse buffers; with grad on they
    run the plain out-of-place arithmetic. Both give the same masks and scores."""
    model = tiny_model if family == "tap" else tiny_sam
    h = w = model.image_size // 16
    gen = torch.Generator().manual_seed(4)
    embed = torch.randn(1, model.encoder_config.out_dim, h, w, generator=gen)
    xy = torch.rand(6, 2, 2, generator=gen) * model.image_size
    labels = torch.tensor([[1, 4]] * 3 + [[2, 3]] * 3)
    with torch.inference_mode():
        fast = model.decode(embed, xy, labels)
    with torch.enable_grad():
        plain = model.decode(embed.clone().requires_grad_(True), xy, labels)
    scale = float(plain.mask_logits.detach().abs().max())
    torch.testing.assert_close(fast.mask_logits, plain.mask_logits.detach(), rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(fast.iou, plain.iou.detach(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(fast.mask_logits.gt(0).numpy()[np.abs(plain.mask_logits.detach().numpy()) > 1e-4 * scale],
                          plain.mask_logits.detach().gt(0).numpy()[np.abs(plain.mask_logits.detach().numpy()) > 1e-4 * scale])
