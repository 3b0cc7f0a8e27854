"""The caption stage's options for learning relations: cached image embeddings
(`cache_embeddings`), the pieces-of-the-caption loss at the semantic token's position
(`loss.words`) and distillation of the image decoder to its starting point
(`loss.distill`)."""

import copy

import numpy as np
import pytest
import torch

from tapkit.data.vg import read_vg
from tapkit.errors import UserError
from tapkit.training import losses
from tapkit.training.config import LossConfig, config_from_dict
from tapkit.training.data import CaptionBatches
from tapkit.training.embedding_cache import build_embedding_cache
from tapkit.training.engine import train
from tapkit.training.objectives import TapObjective
from training_helpers import tiny_train_config

DECODERS_TRAIN = ["image_encoder", "prompt_encoder"]


@pytest.fixture(scope="module")
def segmenter(tiny_world, tmp_path_factory):
    cfg = tiny_train_config(tiny_world, tmp_path_factory.mktemp("seg") / "seg", steps=2)
    return train(config_from_dict(cfg), progress=False)


def _caption_cfg(tiny_world, segmenter, out, **overrides):
    settings = {"steps": 3, "ckpt_every": 100, "freeze": DECODERS_TRAIN, "caption_point_prob": 0.5,
                "model.init_from": str(segmenter.export), **overrides}
    return config_from_dict(tiny_train_config(tiny_world, out, stage="caption", **settings))


def test_cached_embeddings_train_as_the_encoder_would(tiny_world, segmenter, tmp_path):
    plain = train(_caption_cfg(tiny_world, segmenter, tmp_path / "plain"), progress=False)
    cached = train(_caption_cfg(tiny_world, segmenter, tmp_path / "cached", cache_embeddings=True), progress=False)
    a, b = plain.model.state_dict(), cached.model.state_dict()
    moved = [k for k in a if not torch.equal(a[k], segmenter.model.state_dict()[k])]
    assert any(k.startswith("image_decoder") for k in moved) and any(k.startswith("text_decoder") for k in moved)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_cached_batches_hold_embeddings_not_pixels(tiny_world, segmenter):
    model = segmenter.model.eval()
    records = read_vg(tiny_world.vg, tiny_world.sa1b)
    cache = build_embedding_cache(records, model, model.image_size, batch=4, progress=False)
    args = (records, model.image_size, 2, 0, 0, 1, 3, model.tokenizer, 20)
    plain, cached = CaptionBatches(*args)[5], CaptionBatches(*args, cache=cache)[5]
    assert cached.images.shape[0] == 0 and cached.embeds.shape[0] == plain.images.shape[0]
    assert torch.equal(plain.boxes, cached.boxes) and torch.equal(plain.tokens, cached.tokens)
    with torch.no_grad():
        torch.testing.assert_close(cached.embeds, model.encode_image(plain.images))


def test_cache_needs_a_frozen_encoder_and_the_caption_stage(tiny_world, segmenter, tmp_path):
    cfg = _caption_cfg(tiny_world, segmenter, tmp_path / "x", cache_embeddings=True, freeze=["prompt_encoder"])
    with pytest.raises(UserError, match="frozen image encoder"):
        train(cfg, progress=False)
    with pytest.raises(UserError, match="option of stage caption"):
        config_from_dict(tiny_train_config(tiny_world, tmp_path / "y", cache_embeddings=True))


def test_caption_words_is_low_only_for_the_pieces_present():
    targets = torch.tensor([[5, 7, 2, 9], [6, 2, 9, 9]])  # 2 = EOS, 9 = padding (>= vocabulary of 8)
    right = torch.full((2, 8), -12.0)
    right[0, [5, 7]] = 12.0
    right[1, 6] = 12.0
    wrong = right.flip(0)
    special = (9, 1, 2)
    assert losses.caption_words(right, targets, special) < 1e-3
    assert losses.caption_words(wrong, targets, special) > 1.0


def test_words_loss_reaches_the_image_decoder(tiny_world, segmenter, tmp_path):
    cfg = _caption_cfg(tiny_world, segmenter, tmp_path / "w", **{"loss.words": 1.0, "loss.caption": 0.0})
    model = copy.deepcopy(segmenter.model).train()
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(tuple(DECODERS_TRAIN)))
    batches = CaptionBatches(read_vg(tiny_world.vg, tiny_world.sa1b), model.image_size, 2, 0, 0, 1, 3, model.tokenizer, 20)
    out = TapObjective(model, cfg.loss, caption_point_prob=0.0)(batches[0])
    out.total.backward()
    assert "words" in out.parts
    assert model.image_decoder.sem_tokens.weight.grad.abs().sum() > 0


def test_distillation_pulls_the_decoder_back_to_its_teacher(tiny_world, segmenter):
    model = copy.deepcopy(segmenter.model).eval()  # no dropout: the student starts equal to the teacher
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("image_decoder"))
    teacher = copy.deepcopy(model)
    objective = TapObjective(model, LossConfig(caption=0.0, distill=1.0), caption_point_prob=0.0, teacher=teacher)
    batch = CaptionBatches(read_vg(tiny_world.vg, tiny_world.sa1b), model.image_size, 2, 0, 0, 1, 3, model.tokenizer, 20)[1]
    objective(batch).total.backward()
    at_teacher = max(float(p.grad.abs().max()) for p in model.image_decoder.parameters() if p.grad is not None)
    assert at_teacher < 1e-5
    with torch.no_grad():
        for p in model.image_decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05, alpha=1.0)
    optimizer = torch.optim.Adam(model.image_decoder.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        optimizer.zero_grad()
        out = objective(batch)
        out.total.backward()
        optimizer.step()
        first = first if first is not None else out.parts
    last = objective(batch).parts
    assert {"distill_mask", "distill_iou", "distill_concept"} <= set(last)
    assert last["distill_iou"] + last["distill_concept"] < first["distill_iou"] + first["distill_concept"]
    assert last["distill_mask"] < first["distill_mask"]
    assert all(not p.requires_grad for p in teacher.parameters()) and np.isfinite(last["distill_mask"])


def test_distillation_needs_a_starting_checkpoint(tiny_world, tmp_path):
    cfg = config_from_dict(tiny_train_config(tiny_world, tmp_path / "d", stage="caption", freeze=DECODERS_TRAIN,
                                             **{"loss.distill": 1.0}))
    with pytest.raises(UserError, match="model.init_from"):
        train(cfg, progress=False)


def test_nearest_other_is_by_box_centre():
    from tapkit.training.data import nearest_other

    boxes = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [0, 30, 10, 40]], np.float32)
    assert np.array_equal(nearest_other(boxes, 0), boxes[2])
    assert np.array_equal(nearest_other(boxes, 1), boxes[0])
    assert np.isnan(nearest_other(boxes[:1], 0)).all()


def test_neighbour_cells_cover_the_box_or_its_centre():
    from tapkit.training.objectives import neighbour_cells

    cells = neighbour_cells(torch.tensor([[0.0, 0.0, 31.0, 15.0], [40.0, 40.0, 41.0, 41.0]]), grid=8, size=64)
    grid = cells.view(2, 8, 8)
    assert torch.allclose(cells.sum(1), torch.ones(2))
    assert (grid[0, :2, :4] > 0).all() and grid[0].count_nonzero() == 8
    assert grid[1, 5, 5] == 1.0


def test_neighbour_loss_teaches_the_attention_where_to_look(tiny_world, segmenter):
    model = copy.deepcopy(segmenter.model).eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("image_decoder"))
    objective = TapObjective(model, LossConfig(caption=0.0, neighbour=1.0), caption_point_prob=0.0)
    batch = CaptionBatches(read_vg(tiny_world.vg, tiny_world.sa1b), model.image_size, 3, 0, 0, 1, 3, model.tokenizer, 20)[0]
    assert not torch.isnan(batch.neighbour_boxes[:, 0]).all()
    optimizer = torch.optim.Adam(model.image_decoder.parameters(), lr=3e-3)
    first = objective(batch).parts["neighbour"]
    for _ in range(20):
        optimizer.zero_grad()
        objective(batch).total.backward()
        optimizer.step()
    assert objective(batch).parts["neighbour"] < 0.7 * first


def test_final_attention_logits_are_the_attention_the_decoder_runs(segmenter):
    decoder = segmenter.model.image_decoder.eval()
    torch.manual_seed(0)
    tokens, keys = torch.randn(3, 11, decoder.cfg.embed_dim), torch.randn(3, 16, decoder.cfg.embed_dim)
    pos = torch.randn(16, decoder.cfg.embed_dim)
    query, key = decoder.transformer.run_blocks(tokens, keys, pos)
    logits = decoder.transformer.final_attention_logits(query[:, 0], key, pos, tokens[:, 0])
    attn = decoder.transformer.final_attn_token_to_image
    v = attn.v_proj(key).view(3, 16, attn.num_heads, attn.head_dim)
    mixed = torch.einsum("nhk,nkhd->nhd", logits.softmax(-1), v).flatten(1)
    expected = attn(query[:, :1] + tokens[:, :1], key + pos, key)[:, 0]
    torch.testing.assert_close(attn.proj(mixed), expected, rtol=1e-4, atol=1e-5)
