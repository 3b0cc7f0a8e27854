import os
import pickle

import numpy as np
import pytest
import torch

import tapkit
from tapkit.checkpoint.io import CheckpointError, load_checkpoint, save_safetensors
from tapkit.checkpoint.safe_pickle import UnsafePickleError, safe_load_pickle
from tapkit.models.tap.build import tap_from_checkpoint
from tapkit.models.tap.concepts import ConceptFileError, ConceptVocabulary
from tapkit.models.tap.config import PRESETS, infer_config
from tapkit.models.tap.model import TapModel
from tapkit.models.tap.tokenizer import TokenizerError
from tapkit.testing import train_tokenizer


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_its_payload(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"image_encoder.x": _Payload(marker)}))
    with pytest.raises(UnsafePickleError):
        safe_load_pickle(path)
    with pytest.raises(CheckpointError, match="not allowed"):
        load_checkpoint(path)
    with pytest.raises(ConceptFileError):
        ConceptVocabulary.load(path)
    assert not marker.exists()
    # the same file through plain pickle would have run it: the test's payload is real
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_official_pickle_of_arrays_loads(tiny_files):
    ckpt = load_checkpoint(tiny_files.checkpoint)
    assert all(isinstance(v, torch.Tensor) for v in ckpt.tensors.values())
    assert infer_config({k: tuple(v.shape) for k, v in ckpt.tensors.items()}) == tiny_files.config


def test_official_derived_buffers_are_accepted(tiny_files, tmp_path):
    """Official files also hold pixel_mean/pixel_rsig, relative-position index buffers
    and batch-norm counters; they are derived and must not break loading."""
    arrays = pickle.loads(tiny_files.checkpoint.read_bytes())
    arrays["pixel_mean"] = np.array([103.53, 116.28, 123.675], np.float32)
    arrays["pixel_rsig"] = 1 / np.array([57.375, 57.12, 58.395], np.float32)
    arrays["image_encoder.blocks.0.attn.rel_pos_embed.index"] = np.zeros((16, 16), np.int64)
    path = tmp_path / "official_like.pkl"
    path.write_bytes(pickle.dumps(arrays))
    model = tapkit.load_model(path, device="cpu")
    assert isinstance(model, TapModel)


def test_presets_are_named_architectures():
    assert PRESETS["tap_vit_l"].image_encoder.depth == 24
    shapes = {k: tuple(v.shape) for k, v in TapModel(PRESETS["tap_vit_b"]).state_dict().items()}
    assert infer_config(shapes) == PRESETS["tap_vit_b"]


def test_preset_mismatch_is_a_clear_error(tiny_files):
    from tapkit.models.tap.config import ArchitectureError

    with pytest.raises(ArchitectureError, match="--preset tap_vit_b does not fit .*does not match|has shape"):
        tapkit.load_model(tiny_files.checkpoint, preset="tap_vit_b", device="cpu")


def test_safetensors_and_torch_round_trips_give_identical_outputs(tiny_files, tiny_model, tmp_path, rgb_image):
    st = tmp_path / "m.safetensors"
    save_safetensors(tiny_model.learned_state_dict(), st, config=tiny_model.cfg.to_dict())
    pt = tmp_path / "m.pt"
    torch.save(tiny_model.learned_state_dict(), pt)
    prompts = [tapkit.Prompt(points=[(40, 30, 1)])]
    ref = _predict(tiny_model, rgb_image, prompts)
    for path in (st, pt):
        model = tapkit.load_model(path, tokenizer=tiny_files.tokenizer, concepts=tiny_files.concepts, device="cpu")
        out = _predict(model, rgb_image, prompts)
        assert np.array_equal(out.mask, ref.mask) and out.caption == ref.caption and out.score == ref.score


def _predict(model, image, prompts):
    p = tapkit.Predictor(model)
    p.set_image(image)
    return p.predict(prompts)[0]


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"PKnot-a-zip", b"hello world"])
def test_corrupt_checkpoints_are_clear_errors(tmp_path, content):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        tapkit.load_model(path, device="cpu")


def test_not_a_tap_checkpoint(tmp_path):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"fc.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(tapkit.UserError, match="not a checkpoint of a known model family"):
        tapkit.load_model(path, device="cpu")


def test_tokenizer_whose_vocabulary_does_not_match_is_refused(tiny_files, tmp_path):
    other = train_tokenizer(tmp_path / "other.model", vocab_size=70)
    with pytest.raises(TokenizerError, match="wrong tokenizer"):
        tapkit.load_model(tiny_files.checkpoint, tokenizer=other, device="cpu")


def test_concept_file_dimension_must_match(tiny_files, tmp_path):
    path = tmp_path / "c.pkl"
    path.write_bytes(pickle.dumps([np.zeros((7, 3), np.float32), ["a", "b", "c"]]))
    with pytest.raises(ConceptFileError, match="7-d"):
        tapkit.load_model(tiny_files.checkpoint, concepts=path, device="cpu")


def test_missing_tensor_is_reported_by_name(tiny_files):
    ckpt = load_checkpoint(tiny_files.checkpoint)
    del ckpt.tensors["image_decoder.iou_token.weight"]
    with pytest.raises(tapkit.UserError, match="iou_token"):
        tap_from_checkpoint(ckpt)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_of_arrays_loads(tiny_files, tmp_path, protocol):
    arrays = pickle.loads(tiny_files.checkpoint.read_bytes())
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    ckpt = load_checkpoint(path)
    for name, value in arrays.items():
        assert np.array_equal(ckpt.tensors[name].numpy(), value)
    concepts = tmp_path / f"c{protocol}.pkl"
    concepts.write_bytes(pickle.dumps([np.ones((4, 2), np.float32), ["a", "b"]], protocol=protocol))
    assert ConceptVocabulary.load(concepts).names == ["a", "b"]


# --- stored image normalization (issue 13 item 1) ----------------------------------

CUSTOM_MEAN = np.array([90.0, 120.5, 130.25], np.float32)
CUSTOM_RSIG = np.reciprocal(np.array([50.0, 61.0, 70.5], np.float32))


class _HandNormalized(TapModel):
    """The same weights, normalizing with the custom statistics written out by hand."""

    def normalize(self, images_bgr):
        x = images_bgr.float()
        x = (x - torch.from_numpy(CUSTOM_MEAN)) * torch.from_numpy(CUSTOM_RSIG)
        return x.permute(0, 3, 1, 2)


@pytest.fixture
def custom_normalized(tiny_files, tmp_path):
    arrays = pickle.loads(tiny_files.checkpoint.read_bytes())
    arrays["pixel_mean"], arrays["pixel_rsig"] = CUSTOM_MEAN, CUSTOM_RSIG
    path = tmp_path / "custom_norm.pkl"
    path.write_bytes(pickle.dumps(arrays))
    return path


def test_stored_pixel_statistics_are_honoured(custom_normalized, tiny_files, tiny_model, rgb_image):
    model = tapkit.load_model(custom_normalized, tokenizer=tiny_files.tokenizer, concepts=tiny_files.concepts, device="cpu")
    assert torch.equal(model.pixel_mean, torch.from_numpy(CUSTOM_MEAN))
    assert torch.equal(model.pixel_rsig, torch.from_numpy(CUSTOM_RSIG))
    by_hand = _HandNormalized(tiny_model.cfg, tiny_model.tokenizer, tiny_model.concepts).eval()
    by_hand.load_state_dict(tiny_model.state_dict())
    prompts = [tapkit.Prompt(points=[(40, 30, 1)]), tapkit.Prompt(box=(10, 5, 120, 80))]
    for ours, hand in zip(_predict_all(model, rgb_image, prompts), _predict_all(by_hand, rgb_image, prompts)):
        assert np.array_equal(ours.mask, hand.mask) and ours.score == hand.score and ours.caption == hand.caption
    # and the statistics matter: the default normalization answers differently
    default = _predict_all(tiny_model, rgb_image, prompts)
    ours = _predict_all(model, rgb_image, prompts)
    assert any(a.score != b.score for a, b in zip(ours, default))


def test_padding_keeps_the_default_mean(custom_normalized):
    """The reference pads with its constructor's mean, whatever the checkpoint stores."""
    model = tapkit.load_model(custom_normalized, device="cpu")
    batch, _ = model.protocol.preprocess(np.zeros((10, 20, 3), np.uint8), model.image_size)
    assert batch[0, -1, -1].tolist() == [103, 116, 123]


@pytest.mark.parametrize("suffix", [".safetensors", ".pkl"])
def test_convert_keeps_stored_pixel_statistics(custom_normalized, tmp_path, suffix):
    from tapkit.cli.main import main

    out = tmp_path / f"converted{suffix}"
    assert main(["convert", str(custom_normalized), str(out)]) == 0
    stored = load_checkpoint(out).tensors
    assert torch.equal(stored["pixel_mean"], torch.from_numpy(CUSTOM_MEAN))
    assert torch.equal(stored["pixel_rsig"], torch.from_numpy(CUSTOM_RSIG))
    reloaded = tapkit.load_model(out, device="cpu")
    assert torch.equal(reloaded.pixel_rsig, torch.from_numpy(CUSTOM_RSIG))


def test_default_and_shape_only_statistics_are_not_written(tiny_model):
    assert "pixel_mean" not in tiny_model.learned_state_dict()
    with torch.device("meta"):
        meta = TapModel(tiny_model.cfg)
    assert meta.custom_pixel_statistics() == {}
    assert "pixel_rsig" not in meta.learned_state_dict()


def test_malformed_pixel_statistics_are_a_clear_error(tiny_files, tmp_path):
    arrays = pickle.loads(tiny_files.checkpoint.read_bytes())
    arrays["pixel_mean"] = np.zeros((4,), np.float32)
    path = tmp_path / "bad_norm.pkl"
    path.write_bytes(pickle.dumps(arrays))
    with pytest.raises(CheckpointError, match="pixel_mean must be 3 floats"):
        tapkit.load_model(path, device="cpu")


def _predict_all(model, image, prompts):
    p = tapkit.Predictor(model)
    p.set_image(image)
    return p.predict(prompts)
