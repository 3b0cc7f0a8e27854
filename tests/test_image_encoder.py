import torch
from torch.nn import functional as F

from tapkit.models.tap.config import ImageEncoderConfig
from tapkit.models.tap.image_encoder import ImageEncoder, Workspace, relative_position_index, window_partition, window_unpartition
from tapkit.testing import randomize


def test_window_partition_round_trip_and_layout():
    x = torch.randn(2, 8, 12, 5)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 3, 16, 5)
    # window (b=1, row=1, col=2) holds the 4x4 block starting at (4, 8), row-major
    w = windows[1 * 6 + 1 * 3 + 2]
    assert torch.equal(w.view(4, 4, 5), x[1, 4:8, 8:12])
    assert torch.equal(window_unpartition(windows, 4, 8, 12), x)


def test_relative_position_index_matches_explicit_offsets():
    window = 3
    index = relative_position_index(window)
    coords = [(i, j) for i in range(window) for j in range(window)]
    for a, (ya, xa) in enumerate(coords):
        for b, (yb, xb) in enumerate(coords):
            expected = (ya - yb + window - 1) * (2 * window - 1) + (xa - xb + window - 1)
            assert index[a, b] == expected
    # the same offset shares one table entry
    assert index[0, 4] == index[4, 8]


def test_attention_bias_is_per_head_table_lookup():
    cfg = ImageEncoderConfig(depth=4, embed_dim=16, num_heads=2, image_size=64, window_size=2, out_dim=8)
    enc = randomize(ImageEncoder(cfg), seed=1)
    bias = enc.blocks[0].attn.rel_pos_embed()
    table = enc.blocks[0].attn.rel_pos_embed.weight
    assert bias.shape == (1, 2, 4, 4)  # 4-D: broadcast over windows by the fused attention kernel
    # token 0 (0,0) vs token 3 (1,1): offset (-1,-1) -> table entry 0
    assert torch.equal(bias[0, :, 0, 3], table[:, 0])
    assert torch.equal(bias[0, :, 1, 1], table[:, 4])


def _plain_block(block, x):
    """The reference block written out: explicit softmax attention with the bias, out-of-place adds."""
    n, length, dim = x.shape
    heads = block.attn.num_heads
    qkv = F.linear(block.norm1(x), block.attn.qkv.weight, block.attn.qkv.bias).view(n, length, 3, heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / (dim // heads) ** 0.5 + block.attn.rel_pos_embed()
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, length, dim)
    x = x + F.linear(out, block.attn.proj.weight, block.attn.proj.bias)
    hidden = F.gelu(F.linear(block.norm2(x), block.mlp.fc1.weight, block.mlp.fc1.bias))
    return x + F.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)


def test_inference_path_equals_the_plain_block_and_the_training_path():
    """In-place residuals, in-place GELU, reused buffers and the fused attention kernel
    change float rounding only."""
    cfg = ImageEncoderConfig(depth=4, embed_dim=32, num_heads=2, image_size=128, window_size=4, out_dim=8)
    enc = randomize(ImageEncoder(cfg), seed=3).eval()
    x = torch.randn(4, 16, 32)
    block = enc.blocks[0]
    with torch.inference_mode():
        workspace = Workspace(64, 32, block.mlp.fc1.out_features, x)
        fast = block(x.clone(), workspace)
    torch.testing.assert_close(fast, _plain_block(block, x), rtol=1e-5, atol=1e-5)
    image = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        inferred = enc(image)
    trained = enc(image)
    assert trained.requires_grad
    scale = float(trained.detach().abs().max())  # random weights: outputs up to ~150
    torch.testing.assert_close(inferred, trained.detach(), rtol=1e-5, atol=1e-6 * scale)


def test_encoder_windows_cannot_see_each_other_without_bottleneck():
    """Attention is windowed: before the first bottleneck a change inside one window
    leaves tokens of the other windows untouched."""
    cfg = ImageEncoderConfig(depth=4, embed_dim=16, num_heads=2, image_size=64, window_size=2, out_dim=8)
    enc = randomize(ImageEncoder(cfg), seed=2).eval()
    x = torch.randn(1, 3, 64, 64)
    y = x.clone()
    y[:, :, :16, :16] += 1.0  # patch (0, 0): window (0, 0)
    def first_block_tokens(img):
        t = enc.patch_embed(img) + enc.pos_embed.weight.view(1, 4, 4, 16)
        return enc.blocks[0](window_partition(t, 2))
    a, b = first_block_tokens(x), first_block_tokens(y)
    assert not torch.allclose(a[0], b[0])
    assert torch.equal(a[1:], b[1:])


def test_encoder_output_shape_and_cross_window_mixing():
    cfg = ImageEncoderConfig(depth=8, embed_dim=16, num_heads=2, image_size=64, window_size=2, out_dim=8)
    enc = randomize(ImageEncoder(cfg), seed=3).eval()
    assert enc.cross_after == (1, 3, 5, 7)
    x = torch.randn(2, 3, 64, 64)
    out = enc(x)
    assert out.shape == (2, 8, 4, 4)
    y = x.clone()
    y[:, :, :16, :16] += 1.0
    # the bottlenecks carry the change into the far corner's window
    assert not torch.allclose(enc(y)[:, :, 3, 3], out[:, :, 3, 3])
