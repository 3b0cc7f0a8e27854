"""PAT as a SAN variant: a SanConfig with `pat` builds the tokenizer; untrained, it
computes exactly what its SAN does; stage `pat` trains SAN's losses + reconstruction +
codebook terms, starts from a SAN checkpoint, and its export loads through the SAN family."""

import dataclasses

import pytest
import torch

import tapkit
from tapkit.models.clip.config import ClipConfig, TextConfig, VisionConfig
from tapkit.models.san.config import SanConfig, SideConfig
from tapkit.models.san.model import SanModel
from tapkit.models.san.pat import CodebookConfig, PatConfig, PyramidLevel
from tapkit.testing import make_tiny_clip
from tapkit.training.config import config_from_dict
from tapkit.training.engine import train

from san_helpers import san_config, tiny_semseg
from training_helpers import run_two_ranks

PAT = PatConfig(levels=(PyramidLevel(1, 1), PyramidLevel(2, 2)), codebook=CodebookConfig(num_codes=8, dim=8), width=8,
                guidance_width=8, guidance_at=1, recon_factor=4)


def tiny_config(**kw) -> SanConfig:
    clip = ClipConfig(24, VisionConfig(32, 8, 32, 6, 4), TextConfig(16, 300, 32, 4, 2))
    return SanConfig(clip=clip, side=SideConfig(64, 16, 32, 3, 2, 2.0, 6), fusion=((0, 0), (1, 1), (2, 2)),
                     recognition_start=3, deep_supervision=(2, 3), clip_resolution=0.5, decoder_width=16, **kw)


def test_untrained_pat_computes_what_its_san_does():
    torch.manual_seed(0)
    san = SanModel(tiny_config()).eval()
    pat = SanModel(tiny_config(pat=PAT)).eval()
    missing, unexpected = pat.load_state_dict(san.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("pat.") for k in missing)
    classifier = san.classifier(torch.randint(1, 299, (4 * 2, 16)), 2)
    images = torch.randn(2, 3, 64, 64)
    a, b = san(images, classifier), pat(images, classifier)
    torch.testing.assert_close(a.mask_logits, b.mask_logits)
    torch.testing.assert_close(a.class_logits, b.class_logits)
    assert a.pat is None and b.pat.reconstruction.shape == (2, 3, 16, 16)
    assert [tuple(i.shape) for i in b.pat.indices] == [(2, 4, 4), (2, 2, 2)]
    torch.nn.init.normal_(pat.pat.semantic.out.weight)  # once trained, the guidance changes the masks
    assert not torch.allclose(pat(images, classifier).mask_logits, a.mask_logits)


def test_decoder_guidance_enters_the_mask_decoders_pixels_not_the_side_tokens():
    torch.manual_seed(0)
    san = SanModel(tiny_config()).eval()
    cfg = tiny_config(pat=dataclasses.replace(PAT, guidance_into="decoder", guidance_at=99))  # guidance_at unused
    pat = SanModel(cfg).eval()
    pat.load_state_dict(san.state_dict(), strict=False)
    classifier = san.classifier(torch.randint(1, 299, (4 * 2, 16)), 2)
    images = torch.randn(2, 3, 64, 64)
    a = san(images, classifier)
    torch.testing.assert_close(pat(images, classifier).mask_logits, a.mask_logits)  # zero-initialised: SAN
    torch.nn.init.normal_(pat.pat.semantic.out.weight)
    b = pat(images, classifier)
    torch.testing.assert_close(b.pixels - b.pat.guidance, a.pixels)  # the side network's own tokens are SAN's
    assert not torch.allclose(b.mask_logits, a.mask_logits) and not torch.allclose(b.class_logits, a.class_logits)
    assert SanConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AssertionError, match="guidance_into"):
        dataclasses.replace(PAT, guidance_into="clip")


@pytest.mark.parametrize("clip_gradient", [True, False])
def test_pat_losses_reach_clips_positional_embedding_unless_detached(clip_gradient):
    torch.manual_seed(0)
    model = SanModel(tiny_config(pat=dataclasses.replace(PAT, clip_gradient=clip_gradient))).train()
    out = model.tokenize(torch.randn(2, 3, 64, 64))
    out.reconstruction.abs().mean().backward()
    grad = model.clip.visual.positional_embedding.grad
    assert (grad is not None and grad.abs().sum() > 0) == clip_gradient
    assert model.pat.pixel.head[1].weight.grad.abs().sum() > 0


def test_config_round_trip_and_refusals():
    cfg = tiny_config(pat=PAT)
    assert SanConfig.from_dict(cfg.to_dict()) == cfg
    assert SanConfig.from_dict(tiny_config().to_dict()).pat is None
    with pytest.raises(AssertionError, match="before recognition"):
        tiny_config(pat=dataclasses.replace(PAT, levels=(PyramidLevel(5, 1),)))
    with pytest.raises(AssertionError, match="last side block"):
        tiny_config(pat=dataclasses.replace(PAT, guidance_at=3))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"), image_size=32)


@pytest.fixture(scope="module")
def semseg(tmp_path_factory):
    return tiny_semseg(tmp_path_factory.mktemp("semseg"))


PAT_TRAIN = {"layers": [1, 2], "strides": [1, 2], "codebook": {"num_codes": 8, "dim": 8}, "width": 8,
             "guidance_width": 8, "guidance_at": 1, "recon_factor": 4}


def test_stage_pat_trains_from_a_san_and_exports_a_loadable_pat(tiny_clip, semseg, tmp_path):
    base = train(config_from_dict(san_config(tiny_clip.folder, semseg, tmp_path / "san", steps=2)), progress=False)
    cfg = san_config(tiny_clip.folder, semseg, tmp_path / "pat", steps=3, stage="pat", pat=PAT_TRAIN,
                     model={"init_from": str(base.export)})
    result = train(config_from_dict(cfg), progress=False)
    lines = (tmp_path / "pat" / "metrics.jsonl").read_text().splitlines()
    import json

    metrics = json.loads(lines[-1])
    assert {"loss_recon", "loss_codebook", "code_usage_1", "code_perplexity_2", "loss_ce"} <= set(metrics)
    assert 0 < metrics["code_usage_1"] <= 1
    model = tapkit.load_model(result.export)
    assert isinstance(model, SanModel) and model.cfg.pat is not None and model.cfg == result.model.cfg
    san_weights = tapkit.load_model(base.export).state_dict()
    trained = model.state_dict()
    # the SAN it started from kept its architecture; its side network trained on
    assert all(k in trained for k in san_weights)
    assert not torch.equal(trained["pat.semantic.out.weight"], torch.zeros_like(trained["pat.semantic.out.weight"]))
    assert not torch.equal(trained["side.query_embed"], san_weights["side.query_embed"])


def test_stage_pat_refuses_a_pyramid_past_recognition(tiny_clip, semseg, tmp_path):
    from tapkit.errors import UserError

    cfg = san_config(tiny_clip.folder, semseg, tmp_path / "bad", stage="pat", pat={**PAT_TRAIN, "layers": [1, 5]})
    with pytest.raises(UserError, match="before recognition"):
        train(config_from_dict(cfg), progress=False)
    with pytest.raises(UserError, match="as long"):
        config_from_dict(san_config(tiny_clip.folder, semseg, tmp_path / "bad", stage="pat",
                                    pat={**PAT_TRAIN, "strides": [1]}))


def test_real_data_config_builds_on_san_vit_b16():
    from pathlib import Path

    from tapkit.models.san.config import PRESETS
    from tapkit.training.config import load_config

    cfg = load_config(Path(__file__).parent.parent / "configs" / "pat_cocostuff171_vit_b16.yaml")
    assert cfg.stage == "pat" and cfg.san.dataset == "cocostuff171"
    pat = cfg.pat.model_config()
    san = dataclasses.replace(PRESETS["san_vit_b_16"], pat=pat)  # asserts the pyramid reads CLIP before recognition
    assert [lv.layer for lv in san.pat.levels] == [3, 6, 9] and san.pat.codebook.num_codes == 512


DDP_WORKER = """
import os, sys, torch
from tapkit.training.config import load_config
from tapkit.training.engine import train
result = train(load_config(sys.argv[1]), progress=False)
torch.save({k: v.detach() for k, v in result.model.state_dict().items() if k.startswith(("pat.", "side."))},
           os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


def test_stage_pat_under_two_process_gloo_ddp_ends_identical(tiny_clip, semseg, tmp_path):
    """Weights and the codebooks' buffers (EMA sums over the ranks, codes from rank 0) agree."""
    cfg = san_config(tiny_clip.folder, semseg, tmp_path / "run", steps=2, ckpt_every=100, stage="pat", pat=PAT_TRAIN)
    a, b = run_two_ranks(DDP_WORKER, cfg, tmp_path)
    assert "pat.codebooks.0.codes" in a and "pat.semantic.out.weight" in a
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), [k for k in a if not torch.allclose(a[k], b[k])]
