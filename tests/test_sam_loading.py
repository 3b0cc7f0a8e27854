"""SAM checkpoints: recognised by their contents, loaded with weights_only, the
transformers naming mapped both ways (and checked against transformers' own SamModel),
and SAM through the predictor and the CLI."""

import json
import numpy as np
import pytest
import torch

import tapkit
from tapkit.checkpoint.io import CheckpointError
from tapkit.cli.main import main
from tapkit.errors import UserError
from tapkit.models.sam.hf_naming import hf_state_from_sam, sam_state_from_hf
from tapkit.models.sam.model import SamModel
from tapkit.inputs.labels import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, PADDING
from tapkit.testing import tiny_sam_config


def test_official_pth_is_recognised_as_sam_without_a_flag(tiny_sam_checkpoint, tiny_sam):
    assert tiny_sam.family == "sam" and isinstance(tiny_sam, SamModel)
    assert tiny_sam.cfg == tiny_sam_config()
    state = torch.load(tiny_sam_checkpoint, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in tiny_sam.state_dict().items())


def test_sam_takes_no_tokenizer_or_concepts(tiny_sam_checkpoint, tiny_files):
    with pytest.raises(UserError, match="no captioner"):
        tapkit.load_model(tiny_sam_checkpoint, tokenizer=tiny_files.tokenizer, device="cpu")
    with pytest.raises(UserError, match="no concept head"):
        tapkit.load_model(tiny_sam_checkpoint, concepts=tiny_files.concepts, device="cpu")
    with pytest.raises(UserError, match="does not fit"):
        tapkit.load_model(tiny_sam_checkpoint, preset="tap_vit_b", device="cpu")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pth_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.neck.0.weight": _Payload(marker)}, path)
    with pytest.raises(CheckpointError):
        tapkit.load_model(path, device="cpu")
    assert not marker.exists()


def test_unknown_weights_are_reported_not_guessed(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"backbone.conv.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="known model family"):
        tapkit.load_model(path, device="cpu")


def test_truncated_sam_reports_missing_tensors(tiny_sam_checkpoint, tmp_path):
    state = torch.load(tiny_sam_checkpoint, weights_only=True)
    del state["mask_decoder.output_hypernetworks_mlps.2.layers.1.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing"):
        tapkit.load_model(path, device="cpu")


def test_hf_naming_round_trip_is_the_identity(tiny_sam):
    official = tiny_sam.state_dict()
    hf = hf_state_from_sam(official)
    assert "vision_encoder.layers.1.layer_norm1.weight" in hf
    assert "mask_decoder.iou_prediction_head.proj_out.weight" in hf
    assert "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight" in hf  # the hidden layer
    assert torch.equal(hf["shared_image_embedding.positional_embedding"], hf["prompt_encoder.shared_embedding.positional_embedding"])
    back = sam_state_from_hf(hf)
    assert set(back) == set(official)
    assert all(torch.equal(back[k], official[k]) for k in official)


@torch.no_grad()
def test_hf_named_weights_give_transformers_sammodel_answers(tiny_sam, tmp_path):
    """transformers' SamModel is an independent implementation of SAM: the same weights in
    its naming must give the same masks and IoU predictions through tapkit."""
    import transformers

    cfg = tiny_sam.cfg
    enc, dec = cfg.encoder, cfg.decoder
    hf_cfg = transformers.SamConfig(
        vision_config=dict(
            hidden_size=enc.embed_dim, num_hidden_layers=enc.depth, num_attention_heads=enc.num_heads,
            image_size=enc.image_size, patch_size=enc.patch_size, window_size=enc.window_size,
            global_attn_indexes=list(enc.global_attn_indexes), output_channels=enc.out_dim,
            mlp_dim=int(enc.embed_dim * enc.mlp_ratio), num_pos_feats=dec.embed_dim // 2,
        ),
        prompt_encoder_config=dict(hidden_size=dec.embed_dim, image_size=enc.image_size, patch_size=enc.patch_size, mask_input_channels=dec.mask_in_chans),
        mask_decoder_config=dict(hidden_size=dec.embed_dim, num_attention_heads=dec.num_heads, mlp_dim=dec.mlp_dim, iou_head_hidden_dim=dec.iou_head_hidden_dim),
    )
    reference = transformers.SamModel(hf_cfg).eval()
    reference.load_state_dict(hf_state_from_sam(tiny_sam.state_dict()))
    path = tmp_path / "hf_sam.pth"
    torch.save(reference.state_dict(), path)
    model = tapkit.load_model(path, device="cpu")
    assert model.family == "sam" and model.cfg.decoder.norm_eps == 1e-6

    rng = np.random.default_rng(0)
    pixels = torch.from_numpy((rng.random((1, 3, 100, 128)) * 255).astype(np.uint8))
    padded = model.normalize(pixels)
    embed = model.encode_image(pixels)
    ref = reference(pixel_values=padded, input_points=torch.tensor([[[[30.0, 40.0]]]]), input_labels=torch.tensor([[[1]]]), multimask_output=True)
    torch.testing.assert_close(embed, reference.get_image_embeddings(padded), rtol=1e-4, atol=1e-4)
    out = model.decode(embed, torch.tensor([[[30.0, 40.0], [0.0, 0.0]]]), torch.tensor([[1, PADDING]]))
    torch.testing.assert_close(out.mask_logits[0, 1:], ref.pred_masks[0, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.iou[0, 1:], ref.iou_scores[0, 0], rtol=1e-4, atol=1e-4)
    box = reference(pixel_values=padded, input_boxes=torch.tensor([[[10.0, 12.0, 90.0, 80.0]]]), multimask_output=False)
    out = model.decode(embed, torch.tensor([[[10.0, 12.0], [90.0, 80.0]]]), torch.tensor([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]]))
    torch.testing.assert_close(out.mask_logits[0, :1], box.pred_masks[0, 0], rtol=1e-4, atol=1e-4)


def test_predictor_gives_sam_regions_without_names_or_captions(tiny_sam, rgb_image):
    predictor = tapkit.Predictor(tiny_sam)
    predictor.set_image(rgb_image)
    prompts = [tapkit.Prompt(points=[(50, 30, 1)]), tapkit.Prompt(box=(20, 10, 100, 70), points=[(50, 30, 1)]), tapkit.Prompt(points=[(50, 30, 1), (10, 10, 0)])]
    regions = predictor.predict(prompts)
    assert [r.mask_index for r in regions][1:] == [0, 0] and regions[0].mask_index in (1, 2, 3)
    for r in regions:
        assert r.mask.shape == rgb_image.shape[:2] and r.concept is None and r.caption is None and r.embedding is None
        assert r.concepts == []
    assert regions[1].prompt_dict() == {"box": [20.0, 10.0, 100.0, 70.0], "points": [[50.0, 30.0, 1]]}
    for prompt, region in zip(prompts, regions):
        alone = predictor.predict([prompt])[0]
        assert alone.mask_index == region.mask_index and abs(alone.score - region.score) < 1e-5


def test_predict_cli_on_a_sam_checkpoint(tiny_sam_checkpoint, tmp_path, rgb_image):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(image)
    out = tmp_path / "out.json"
    code = main(["predict", str(image), "--checkpoint", str(tiny_sam_checkpoint), "--point", "50,30", "--output", str(out), "--device", "cpu"])
    assert code == 0
    region = json.loads(out.read_text())["regions"][0]
    assert region["caption"] is None and region["concept"] is None and region["concepts"] == []
    assert region["prompt"] == {"points": [[50.0, 30.0, 1]]}
    assert main(["predict", str(image), "--checkpoint", str(tiny_sam_checkpoint), "--point", "5,5", "--concepts", str(image)]) == 2
    assert main(["predict", str(image), "--checkpoint", str(tiny_sam_checkpoint), "--point", "5,5", "--num-beams", "3"]) == 2


def test_convert_sam_to_safetensors_and_back(tiny_sam_checkpoint, tmp_path):
    st, pth = tmp_path / "sam.safetensors", tmp_path / "sam.pth"
    assert main(["convert", str(tiny_sam_checkpoint), str(st)]) == 0
    assert main(["convert", str(st), str(pth)]) == 0
    assert main(["convert", str(st), str(tmp_path / "sam.pkl")]) == 2
    a, b = torch.load(tiny_sam_checkpoint, weights_only=True), torch.load(pth, weights_only=True)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
