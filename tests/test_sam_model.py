"""SAM numerics on tiny random models: relative positions, windowed vs global blocks,
architecture read off the weights, prompt encoding, coordinate transforms, routing."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from tapkit.models.sam.config import PRESETS, SamEncoderConfig, infer_sam_config
from tapkit.models.sam.image_encoder import Block, decomposed_rel_pos_bias, get_rel_pos, window_partition, window_unpartition
from tapkit.models.sam.model import SamModel
from tapkit.inputs.labels import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, PADDING
from tapkit.models.sam.prompt_encoder import PromptEncoder
from tapkit.models.sam.protocol import SamProtocol, preprocess_shape, resize_longest_side, select_sam_masks
from tapkit.inputs.image import ResizeInfo
from tapkit.inputs.prompts import Prompt
from tapkit.testing import randomize, tiny_sam_config


def test_get_rel_pos_is_a_table_lookup_by_offset_when_sizes_match():
    table = torch.randn(2 * 5 - 1, 3)
    r = get_rel_pos(5, 5, table)
    for q in range(5):
        for k in range(5):
            assert torch.equal(r[q, k], table[q - k + 4])


def test_get_rel_pos_interpolates_a_table_of_another_length():
    table = torch.randn(7, 2)  # made for size 4, used for size 6 (needs 11 rows)
    r = get_rel_pos(6, 6, table)
    # linear resize, align_corners=False, written out with numpy
    src = (np.arange(11) + 0.5) * 7 / 11 - 0.5
    src = np.clip(src, 0, 6)
    resized = np.stack([np.interp(src, np.arange(7), table[:, c].numpy()) for c in range(2)], axis=1)
    for q in range(6):
        for k in range(6):
            np.testing.assert_allclose(r[q, k].numpy(), resized[q - k + 5], rtol=1e-5, atol=1e-6)


def test_get_rel_pos_stretches_the_shorter_axis_when_query_and_key_differ():
    table = torch.randn(2 * 6 - 1, 2)
    r = get_rel_pos(3, 6, table)  # queries on a 2x coarser grid
    for q in range(3):
        for k in range(6):
            assert torch.equal(r[q, k], table[int(q * 2 - k + 5)])


def test_decomposed_rel_pos_bias_has_row_and_column_terms_for_every_pair():
    qh, qw, c = 3, 4, 5
    q = torch.randn(2, 3, qh * qw, c).transpose(1, 2).transpose(1, 2)  # (B, heads, L, C)
    rel_h, rel_w = torch.randn(2 * qh - 1, c), torch.randn(2 * qw - 1, c)
    bias = decomposed_rel_pos_bias(q, rel_h, rel_w, (qh, qw), (qh, qw))
    assert bias.shape == (2, 3, qh * qw, qh * qw)
    for b, head, (y, x), (ky, kx) in ((1, 2, (2, 1), (0, 3)), (0, 0, (0, 0), (2, 3))):
        i, j = y * qw + x, ky * qw + kx
        expected = q[b, head, i] @ rel_h[y - ky + qh - 1] + q[b, head, i] @ rel_w[x - kx + qw - 1]
        torch.testing.assert_close(bias[b, head, i, j], expected)


def test_window_partition_pads_to_whole_windows_and_round_trips():
    x = torch.randn(2, 8, 7, 4)
    windows, padded = window_partition(x, 3)
    assert padded == (9, 9) and windows.shape == (2 * 9, 3 * 3, 4)
    grid = windows.view(2 * 9, 3, 3, 4)
    assert torch.equal(grid[2, :, :1], x[0, 0:3, 6:7])  # window (0, 2) holds column 6 and padding
    assert torch.equal(grid[2, :, 1:], torch.zeros(3, 2, 4))
    assert torch.equal(grid[15, 2], torch.zeros(3, 4))  # window (2, 0) of image 1: its last row is padding
    assert torch.equal(window_unpartition(windows, 3, padded, (8, 7)), x)


@pytest.mark.parametrize("size", [(8, 7), (9, 9), (7, 11), (2, 2)])
def test_window_partition_is_pad_then_tile(size):
    """The one-copy partition equals padding the map with `fill`, then cutting windows."""
    h, w = size
    x, fill = torch.randn(2, h, w, 4), torch.randn(4)
    windows, (hp, wp) = window_partition(x, 3, fill)
    padded = fill.expand(2, hp, wp, 4).clone()
    padded[:, :h, :w] = x
    tiles = padded.view(2, hp // 3, 3, wp // 3, 3, 4).permute(0, 1, 3, 2, 4, 5).reshape(-1, 9, 4)
    assert torch.equal(windows, tiles)
    assert torch.equal(window_unpartition(tiles, 3, (hp, wp), (h, w)), x)


def _block(window: int) -> Block:
    cfg = SamEncoderConfig(depth=1, embed_dim=16, num_heads=2, image_size=8 * 16, window_size=window, out_dim=8, global_attn_indexes=())
    return randomize(Block(cfg, window), seed=3, scale=0.1)


@torch.no_grad()
def test_windowed_block_mixes_only_inside_windows_and_global_block_mixes_everything():
    x = torch.randn(1, 8, 8, 16, dtype=torch.float64)
    far = x.clone()
    far[0, 7, 7] += torch.randn(16, dtype=torch.float64)  # a token in the last window (not a constant: LayerNorm would erase it)
    windowed, global_ = _block(3).double(), _block(0).double()
    dw = (windowed(far) - windowed(x)).abs().amax(-1)[0]
    dg = (global_(far) - global_(x)).abs().amax(-1)[0]
    assert dw[:6, :6].max() == 0  # other windows see nothing
    assert dw[6:, 6:].min() > 0
    assert dg.min() > 0  # global attention: every token changes
    assert windowed.attn.rel_pos_h.shape[0] == 2 * 3 - 1 and global_.attn.rel_pos_h.shape[0] == 2 * 8 - 1


@torch.no_grad()
def test_windowed_block_equals_attention_run_on_each_padded_window():
    block = _block(3)
    x = torch.randn(1, 8, 8, 16)
    h = block.norm1(x)
    padded = F.pad(h, (0, 0, 0, 1, 0, 1))
    out = torch.zeros(1, 9, 9, 16)
    for r in range(3):
        for c in range(3):
            win = padded[:, 3 * r : 3 * r + 3, 3 * c : 3 * c + 3]
            out[:, 3 * r : 3 * r + 3, 3 * c : 3 * c + 3] = block.attn(win)
    y = x + out[:, :8, :8]
    y = y + block.mlp(block.norm2(y))
    torch.testing.assert_close(block(x), y)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_read_back_off_their_weights(name):
    with torch.device("meta"):
        model = SamModel(PRESETS[name])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert infer_sam_config(shapes) == PRESETS[name]


def test_tiny_config_is_read_back_including_global_blocks():
    cfg = tiny_sam_config()
    shapes = {k: tuple(v.shape) for k, v in SamModel(cfg).state_dict().items()}
    inferred = infer_sam_config(shapes)
    assert inferred == cfg and inferred.encoder.global_attn_indexes == (1, 3)


def test_preprocess_shape_rounds_half_up_on_the_short_side():
    assert preprocess_shape(480, 640, 1024) == (768, 1024)
    assert preprocess_shape(1500, 900, 1024) == (1024, 614)  # 614.4
    assert preprocess_shape(3, 5, 1024) == (614, 1024)  # 614.4
    assert preprocess_shape(1, 2, 1024) == (512, 1024)
    assert preprocess_shape(5, 8, 100) == (63, 100)  # 62.5 rounds up


def test_resize_is_pil_bilinear_and_skipped_at_the_target_size():
    rng = np.random.default_rng(0)
    rgb = (rng.random((30, 50, 3)) * 255).astype(np.uint8)
    out = resize_longest_side(rgb, 64)
    expected = np.asarray(Image.fromarray(rgb).resize((64, 38), Image.BILINEAR))
    assert out.shape == (38, 64, 3) and np.array_equal(out, expected)
    assert resize_longest_side(rgb, 50) is rgb


def test_model_normalizes_rgb_then_zero_pads():
    model = SamModel(tiny_sam_config())
    image = torch.full((1, 3, 40, 128), 200, dtype=torch.uint8)
    x = model.normalize(image)
    assert x.shape == (1, 3, 128, 128)
    torch.testing.assert_close(x[0, :, 0, 0], (200 - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor([58.395, 57.12, 57.375]))
    assert torch.equal(x[:, :, 40:], torch.zeros(1, 3, 88, 128))


def test_coordinates_scale_per_axis_in_float64():
    info = ResizeInfo((480, 641), (767, 1024), 0.0)
    points = np.array([[[100.3, 200.7, 1], [0, 0, PADDING]]])
    xy, labels = SamProtocol().input_frame(points, info)
    assert xy.dtype == torch.float32 and labels.tolist() == [[1, PADDING]]
    assert xy[0, 0, 0].item() == np.float32(100.3 * (1024 / 641))
    assert xy[0, 0, 1].item() == np.float32(200.7 * (767 / 480))


def test_sam_prompt_order_clicks_then_padding_or_box_corners():
    protocol = SamProtocol()
    pts = protocol.prompt_points(Prompt(points=[(3, 4, 1), (5, 6, 0)]), 10, 10)
    assert pts.tolist() == [[3, 4, 1], [5, 6, 0], [0, 0, PADDING]]
    pts = protocol.prompt_points(Prompt(points=[(3, 4, 1)], box=(1, 2, 8, 9)), 10, 10)
    assert pts.tolist() == [[3, 4, 1], [1, 2, BOX_TOP_LEFT], [8, 9, BOX_BOTTOM_RIGHT]]
    assert pts.dtype == np.float64


def test_padding_point_is_only_the_not_a_point_embedding():
    enc = randomize(PromptEncoder(16, 4, 64, 8), seed=1)
    xy = torch.tensor([[[10.0, 20.0], [0.0, 0.0]], [[10.0, 20.0], [33.0, 7.0]]])
    labels = torch.tensor([[1, PADDING], [1, PADDING]])
    out = enc.embed_points(xy, labels)
    assert torch.equal(out[0, 1], enc.not_a_point_embed.weight[0])
    assert torch.equal(out[0], out[1])
    coords = torch.tensor([[[10.5 / 64, 20.5 / 64]]])
    torch.testing.assert_close(out[0, 0], enc.pe_layer.encode(coords)[0, 0] + enc.point_embeddings[1].weight[0])


def test_box_corners_get_their_corner_embeddings():
    enc = randomize(PromptEncoder(16, 4, 64, 8), seed=2)
    xy = torch.tensor([[[5.0, 6.0], [40.0, 50.0]]])
    out = enc.embed_points(xy, torch.tensor([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]]))
    pe = enc.pe_layer.encode(torch.tensor([[[5.5 / 64, 6.5 / 64], [40.5 / 64, 50.5 / 64]]]))
    torch.testing.assert_close(out[0, 0], pe[0, 0] + enc.point_embeddings[2].weight[0])
    torch.testing.assert_close(out[0, 1], pe[0, 1] + enc.point_embeddings[3].weight[0])


def test_dense_grid_encodes_cell_centres():
    enc = randomize(PromptEncoder(16, 4, 64, 8), seed=3)
    pe = enc.dense_pe()
    assert pe.shape == (1, 16, 16)
    torch.testing.assert_close(pe[0, 1 * 4 + 2], enc.pe_layer.encode(torch.tensor([2.5 / 4, 1.5 / 4])))


def test_single_click_takes_the_best_multimask_output_everything_else_mask_zero():
    iou = torch.tensor([[0.9, 0.1, 0.7, 0.3]] * 5)
    labels = torch.tensor(
        [
            [1, PADDING, PADDING],  # one click (padded batch row)
            [0, PADDING, PADDING],  # one background click
            [1, 1, PADDING],  # two clicks
            [BOX_TOP_LEFT, BOX_BOTTOM_RIGHT, PADDING],  # a box
            [1, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT],  # a click and a box
        ]
    )
    assert select_sam_masks(iou, labels).tolist() == [2, 2, 0, 0, 0]


@torch.no_grad()
def test_decoder_broadcasts_the_image_so_a_batch_equals_its_prompts_alone(tiny_sam):
    # a fixed embedding: drawn from the global generator, it depended on which tests ran first
    embed = torch.randn(1, 64, 8, 8, generator=torch.Generator().manual_seed(0))
    xy = torch.tensor([[[10.0, 20.0], [0.0, 0.0]], [[100.0, 3.0], [0.0, 0.0]], [[60.0, 60.0], [70.0, 90.0]]])
    labels = torch.tensor([[1, PADDING], [0, PADDING], [BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]])
    batch = tiny_sam.decode(embed, xy, labels)
    assert batch.mask_logits.shape == (3, 4, 32, 32) and batch.sem_tokens.shape == (3, 4, 0)
    for i in range(3):
        alone = tiny_sam.decode(embed, xy[i : i + 1], labels[i : i + 1])
        torch.testing.assert_close(batch.mask_logits[i], alone.mask_logits[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(batch.iou[i], alone.iou[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_mask_input_changes_the_dense_embedding(tiny_sam):
    embed = torch.randn(1, 64, 8, 8)
    xy, labels = torch.tensor([[[10.0, 20.0], [0.0, 0.0]]]), torch.tensor([[1, PADDING]])
    plain = tiny_sam.decode(embed, xy, labels)
    with_mask = tiny_sam.decode(embed, xy, labels, mask_input=torch.randn(1, 1, 32, 32) * 3)
    assert not torch.allclose(plain.mask_logits, with_mask.mask_logits)
    dense = tiny_sam.prompt_encoder.embed_masks(None)
    assert torch.equal(dense[0, :, 0, 0], tiny_sam.prompt_encoder.no_mask_embed.weight[0])
