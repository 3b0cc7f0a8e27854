"""PAT's parts on tiny random inputs: the feature pyramid of a frozen CLIP, the
codebooks (nearest code, straight-through, codebook/commitment terms, EMA, dead-code
restarts, usage), the pixel branch, the zero-initialised semantic branch and the
coupling between them."""

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from tapkit.models.clip.model import ClipModel
from tapkit.models.san.pat import CodebookConfig, FeaturePyramidTokenizer, PatConfig, PyramidLevel
from tapkit.models.san.pat.codebook import VectorQuantizer, code_statistics, nearest_codes
from tapkit.models.san.pat.losses import reconstruction_loss
from tapkit.models.san.pat.pixel import PixelBranch
from tapkit.models.san.pat.pyramid import FeaturePyramid
from tapkit.models.san.pat.semantic import SemanticBranch
from tapkit.testing import randomize, tiny_clip_config

LEVELS = (PyramidLevel(1, 1), PyramidLevel(2, 2), PyramidLevel(3, 4))


def clip_maps(clip: ClipModel, images: torch.Tensor, layers: set[int]) -> dict[int, torch.Tensor]:
    """The frozen CLIP's patch maps after the stem (0) and after each listed block."""
    visual = clip.visual
    x = visual.embed(images)
    grid = images.shape[-1] // visual.patch_size
    as_map = lambda t: t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, grid, grid)  # noqa: E731
    maps = {0: as_map(x)}
    for i, block in enumerate(visual.transformer.resblocks, start=1):
        x = block(x)
        maps[i] = as_map(x)
    return {k: v for k, v in maps.items() if k in layers}


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return randomize(ClipModel(tiny_clip_config(40, image_size=64, layers=4)), 0).eval()


def test_pyramid_levels_have_their_depths_resolutions_and_unit_scale(clip):
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = clip_maps(clip, images, {1, 2, 3})
        levels = FeaturePyramid(LEVELS)(maps)
    assert [tuple(x.shape) for x in levels] == [(2, 32, 8, 8), (2, 32, 4, 4), (2, 32, 2, 2)]
    # level 2 is block 2's map average-pooled by 2, then normalised over channels
    pooled = F.avg_pool2d(maps[2], 2).permute(0, 2, 3, 1)
    expected = ((pooled - pooled.mean(-1, keepdim=True)) / (pooled.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt())
    torch.testing.assert_close(levels[1], expected.permute(0, 3, 1, 2), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(levels[0][:, :, ::2, ::2], FeaturePyramid((PyramidLevel(2, 1),))(maps)[0][:, :, ::2, ::2])


def test_nearest_codes_match_brute_force():
    g = torch.Generator().manual_seed(1)
    z, codes = torch.randn(50, 6, generator=g), torch.randn(9, 6, generator=g)
    brute = torch.cdist(z, codes).argmin(1)
    assert torch.equal(nearest_codes(z, codes), brute)


def test_code_statistics_usage_and_perplexity():
    counts, usage, perplexity = code_statistics(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 8)
    assert counts.tolist() == [2, 2, 2, 2, 0, 0, 0, 0]
    assert usage == pytest.approx(0.5) and perplexity == pytest.approx(4.0, rel=1e-5)
    _, usage, perplexity = code_statistics(torch.zeros(10, dtype=torch.long), 8)
    assert usage == pytest.approx(1 / 8) and perplexity == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("ema", [True, False])
def test_quantizer_gives_nearest_codes_with_a_straight_through_gradient(ema):
    torch.manual_seed(0)
    vq = VectorQuantizer(CodebookConfig(num_codes=8, dim=4, ema=ema)).eval()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.equal(out.indices.flatten(), torch.cdist(flat, vq.codes.detach()).argmin(1))
    torch.testing.assert_close(out.quantized.detach().permute(0, 2, 3, 1).reshape(-1, 4), vq.codes.detach()[out.indices.flatten()])
    weights = torch.randn_like(out.quantized)
    (out.quantized * weights).sum().backward()
    torch.testing.assert_close(z.grad, weights)  # straight through: d quantized / d z = identity


def test_codebook_and_commitment_terms():
    torch.manual_seed(0)
    cfg = CodebookConfig(num_codes=8, dim=4, ema=False, beta=0.25)
    vq = VectorQuantizer(cfg).eval()
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    out = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    chosen = vq.codes[out.indices.flatten()]
    torch.testing.assert_close(out.loss, 1.25 * F.mse_loss(flat, chosen))
    out.loss.backward()
    used = out.indices.unique()
    assert vq.codes.grad[used].abs().sum() > 0  # the codebook term moves the chosen codes
    unused = torch.ones(8, dtype=torch.bool)
    unused[used] = False
    assert vq.codes.grad[unused].abs().sum() == 0
    # the commitment term alone reaches the features: 0.25 * d mse / dz
    torch.testing.assert_close(z.grad.permute(0, 2, 3, 1).reshape(-1, 4), 0.25 * 2 * (flat - chosen).detach() / flat.numel())


def test_ema_codes_move_to_the_mean_of_their_features():
    cfg = CodebookConfig(num_codes=2, dim=2, ema=True, decay=0.5, dead_threshold=0.0)
    vq = VectorQuantizer(cfg).train()
    vq.initialized.fill_(True)
    vq.codes.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vq.ema_sum.copy_(vq.codes)
    vq.ema_count.fill_(1.0)
    z = torch.tensor([[1.0, 1.0], [3.0, 1.0], [9.0, 9.0], [9.0, 11.0]]).t().reshape(1, 2, 2, 2)
    for _ in range(30):
        vq(z)
    torch.testing.assert_close(vq.codes, torch.tensor([[2.0, 1.0], [9.0, 10.0]]), atol=1e-3, rtol=0)


def test_dead_codes_are_restarted_on_batch_features():
    torch.manual_seed(0)
    cfg = CodebookConfig(num_codes=6, dim=3, ema=True, decay=0.5, dead_threshold=0.2)
    vq = VectorQuantizer(cfg).train()
    vq.initialized.fill_(True)
    far = torch.full((6, 3), 100.0)
    far[0] = 0.0
    vq.codes.copy_(far)
    vq.ema_sum.copy_(far)
    z = torch.randn(1, 3, 4, 4) * 0.1
    first = vq(z)
    assert first.usage == pytest.approx(1 / 6)  # every feature went to code 0
    for _ in range(4):
        out = vq(z)
    assert vq.codes.abs().max() < 1.0  # no code is left far from the data (they were at 100)
    assert out.usage > 0.5 > first.usage
    feats = z.permute(0, 2, 3, 1).reshape(-1, 3)
    dead = torch.tensor([False, True, True, False, False, False])
    vq.restart(dead, feats)
    for code in vq.codes[dead]:  # a restarted code sits on one of the batch's features
        assert torch.cdist(code[None], feats).min() < 1e-6


def test_quantizer_state_does_not_change_in_eval_mode():
    vq = VectorQuantizer(CodebookConfig(num_codes=8, dim=4)).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 4, 3, 3))
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_pixel_branch_composes_bottom_up_and_decodes_top_down():
    torch.manual_seed(0)
    branch = PixelBranch(3, 4, 8, recon_factor=2).eval()
    tokens = [torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)]
    out = branch(tokens)
    assert out.reconstruction.shape == (1, 3, 16, 16)
    assert [tuple(d.shape) for d in out.decoded] == [(1, 8, 8, 8), (1, 8, 4, 4), (1, 8, 2, 2)]
    # bottom-up: the finest tokens reach the coarsest composition; top-down: the coarsest reach the picture
    composed = branch.composition(tokens)
    changed_fine = branch.composition([tokens[0] + 1, tokens[1], tokens[2]])
    assert not torch.allclose(composed[2], changed_fine[2])
    changed_top = branch([tokens[0], tokens[1], tokens[2] + 1]).reconstruction
    assert not torch.allclose(out.reconstruction, changed_top)


def test_pixel_branch_learns_to_reconstruct():
    torch.manual_seed(0)
    branch = PixelBranch(2, 4, 16, recon_factor=2)
    tokens = [torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2)]
    images = F.interpolate(tokens[0][:, :3], size=(32, 32), mode="nearest")
    opt = torch.optim.Adam(branch.parameters(), 1e-2)
    first = float(reconstruction_loss(branch(tokens).reconstruction, images).detach())
    for _ in range(60):
        loss = reconstruction_loss(branch(tokens).reconstruction, images)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_semantic_branch_starts_at_zero_and_learns():
    torch.manual_seed(0)
    branch = SemanticBranch(2, 4, 8, 6)
    levels = [torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)]
    guidance = branch(levels, (8, 8))
    assert guidance.shape == (1, 6, 8, 8) and guidance.abs().max() == 0
    guidance.sum().backward()
    assert branch.out.weight.grad.abs().sum() > 0


def _tokenizer(coupling: str, shared: bool, levels=LEVELS) -> FeaturePyramidTokenizer:
    cfg = PatConfig(levels=levels, codebook=CodebookConfig(num_codes=16, dim=8), width=8, guidance_width=8,
                    coupling=coupling, shared_decoder=shared, recon_factor=2)
    torch.manual_seed(0)
    tok = FeaturePyramidTokenizer(cfg, clip_width=32, side_width=12)
    torch.nn.init.normal_(tok.semantic.out.weight)  # as after training: the guidance is not zero
    return tok.train()


def _grads(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("coupling", ["loose", "coupled"])
def test_coupling_decides_where_segmentation_gradients_go(clip, coupling, shared):
    tok = _tokenizer(coupling, shared)
    with torch.no_grad():
        maps = clip_maps(clip, torch.randn(2, 3, 64, 64), {1, 2, 3})
    out = tok(maps, (8, 8))
    assert out.guidance.shape == (2, 12, 8, 8) and out.reconstruction.shape == (2, 3, 16, 16)
    assert [tuple(i.shape) for i in out.indices] == [(2, 8, 8), (2, 4, 4), (2, 2, 2)]
    assert len(out.usage) == len(out.perplexity) == 3 and all(0 < u <= 1 for u in out.usage)
    out.guidance.square().mean().backward()  # a stand-in for the segmentation loss
    assert _grads(tok.semantic) > 0
    reaches_encoders = _grads(tok.encoders) > 0
    reaches_decoder = _grads(tok.pixel.decode) > 0
    assert reaches_encoders == (coupling == "coupled")
    assert reaches_decoder == (coupling == "coupled" and shared)


def test_reconstruction_trains_the_encoders_through_the_codes(clip):
    tok = _tokenizer("loose", True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = clip_maps(clip, images, {1, 2, 3})
    out = tok(maps, (8, 8))
    (reconstruction_loss(out.reconstruction, images) + out.codebook_loss).backward()
    assert _grads(tok.encoders) > 0 and _grads(tok.pixel) > 0


def test_single_resolution_levels_share_the_clip_grid(clip):
    single = tuple(dataclasses.replace(lv, stride=1) for lv in LEVELS)
    tok = _tokenizer("loose", True, single)
    with torch.no_grad():
        maps = clip_maps(clip, torch.randn(1, 3, 64, 64), {1, 2, 3})
    out = tok(maps, (8, 8))
    assert [tuple(i.shape) for i in out.indices] == [(1, 8, 8)] * 3


def test_config_round_trips():
    cfg = PatConfig(levels=(PyramidLevel(2, 1), PyramidLevel(3, 2)), codebook=CodebookConfig(num_codes=5, ema=False),
                    coupling="coupled", shared_decoder=False, guidance_at=1)
    assert PatConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AssertionError):
        PatConfig(coupling="tight")


def test_guidance_scale_multiplies_the_guidance(clip):
    with torch.no_grad():
        maps = clip_maps(clip, torch.randn(1, 3, 64, 64), {1, 2, 3})
    one = _tokenizer("loose", True).eval()
    three = FeaturePyramidTokenizer(dataclasses.replace(one.cfg, guidance_scale=3.0), 32, 12).eval()
    three.load_state_dict(one.state_dict())
    torch.testing.assert_close(three(maps, (8, 8)).guidance, 3 * one(maps, (8, 8)).guidance)
