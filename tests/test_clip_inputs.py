"""The CLIP tokenizer against transformers' CLIPTokenizer, open_clip's cleaning and
truncation rules, the eval transform against plain PIL, and one-line errors for bad files."""

import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import tapkit
from tapkit.errors import UserError
from tapkit.models.clip.config import PreprocessConfig
from tapkit.models.clip.preprocess import preprocess
from tapkit.models.clip.tokenizer import ClipTokenizer
from tapkit.testing import make_tiny_clip, train_clip_vocab

transformers = pytest.importorskip("transformers")

STRINGS = [
    "a small red circle left of a blue star",
    "A Photo Of A Purple HEXAGON.",
    "what's this?! it's a star... isn't it; (yes) -- [no] {maybe} @home #tag $5 100% a+b=c",
    "café crème brûlée, naïve façade, Ærøskøbing, São Paulo, Zürich",
    "Cafe\u0301 (combining accent)",
    "many     spaces    between   words",
    "tabs\tand\t\ttabs\nand\nnewlines\r\n end",
    "   leading and trailing   ",
    "",
    "   ",
    "numbers 12345 and 3.14159 and 1,000,000",
    "emoji 🙂🚀 and 中文字符 and кириллица and ελληνικά",
    "they'll we've I'm you'd she's o'clock",
    "red circle " * 40,
]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    return train_clip_vocab(tmp_path_factory.mktemp("clip_vocab"))


@pytest.mark.parametrize("text", STRINGS)
def test_ids_equal_transformers_clip_tokenizer(text, vocab_dir):
    ours = ClipTokenizer.from_dir(vocab_dir, context_length=16)
    ref = transformers.CLIPTokenizer(vocab=str(vocab_dir / "vocab.json"), merges=str(vocab_dir / "merges.txt"))
    expected = ref(text, truncation=True, max_length=16)["input_ids"]
    row = ours([text])[0]
    n = len(expected)
    assert row[:n].tolist() == expected
    assert row[n:].eq(0).all()  # open_clip pads with 0
    assert ours.encode(text) == ref(text, add_special_tokens=False)["input_ids"]


def test_truncation_keeps_end_of_text_in_the_last_slot(vocab_dir):
    tok = ClipTokenizer.from_dir(vocab_dir, context_length=8)
    row = tok(["red circle " * 20])[0]
    pieces = tok.encode("red circle " * 20)
    assert len(pieces) > 8
    assert row[0] == tok.start_id and row[-1] == tok.end_id
    assert row[1:-1].tolist() == pieces[:6]
    assert tok([""])[0, :2].tolist() == [tok.start_id, tok.end_id]


def test_html_entities_are_unescaped_as_open_clip_does(vocab_dir):
    tok = ClipTokenizer.from_dir(vocab_dir)
    assert tok.encode("fish &amp; chips &amp;amp; &lt;b&gt;") == tok.encode("fish & chips & <b>")


def test_tokenizer_json_gives_the_same_ids(vocab_dir, tmp_path):
    ref = transformers.CLIPTokenizer(vocab=str(vocab_dir / "vocab.json"), merges=str(vocab_dir / "merges.txt"))
    ref.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    a = ClipTokenizer.from_dir(vocab_dir)(STRINGS)
    b = ClipTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")(STRINGS)
    assert torch.equal(a, b)


def pil_reference(image: Image.Image, size: int) -> np.ndarray:
    """open_clip's eval transform spelled out with PIL: shorter side to `size` (bicubic, the
    longer side truncated), centre crop with offsets rounded half to even, then mean/std."""
    w, h = image.size
    scale = size / min(w, h)
    new = (size, int(h * size / w)) if w <= h else (int(w * size / h), size)
    assert abs(new[0] - w * scale) < 1 and abs(new[1] - h * scale) < 1
    resized = image.resize(new, Image.BICUBIC)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    crop = np.asarray(resized, np.float32)[top : top + size, left : left + size] / 255.0
    mean, std = np.array(PreprocessConfig().mean, np.float32), np.array(PreprocessConfig().std, np.float32)
    return ((crop - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("wh", [(37, 101), (101, 37), (33, 33), (255, 97), (64, 65), (7, 500), (224, 224)])
def test_preprocessing_matches_plain_pil(wh):
    rng = np.random.default_rng(wh[0] * 1000 + wh[1])
    image = Image.fromarray((rng.random((wh[1], wh[0], 3)) * 255).astype(np.uint8))
    ours = preprocess(image, 32, PreprocessConfig())
    assert ours.shape == (3, 32, 32)
    np.testing.assert_allclose(ours.numpy(), pil_reference(image, 32), atol=1e-6)


def test_preprocessing_takes_rgba_and_grey_images_as_rgb():
    grey = Image.fromarray(np.full((20, 30), 200, np.uint8), mode="L")
    rgba = Image.fromarray(np.full((20, 30, 4), 200, np.uint8), mode="RGBA")
    assert torch.allclose(preprocess(grey, 16, PreprocessConfig()), preprocess(rgba, 16, PreprocessConfig()))


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        tapkit.load_clip(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and message
    return message


def test_torchscript_archive_gets_the_conversion_command(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "ViT-B-16.pt"))
    assert zipfile.is_zipfile(tmp_path / "ViT-B-16.pt")
    message = one_line_error(tmp_path / "ViT-B-16.pt")
    assert "TorchScript" in message and "torch.jit.load" in message and "state_dict()" in message


def test_bad_files_are_one_line(tmp_path, vocab_dir):
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01 not a checkpoint at all")
    one_line_error(tmp_path / "garbage.pt")
    one_line_error(tmp_path / "missing.safetensors")
    torch.save({"image_encoder.patch_embed.weight": torch.zeros(2)}, tmp_path / "tap.pt")
    assert "not a CLIP checkpoint" in one_line_error(tmp_path / "tap.pt")
    (tmp_path / "empty_dir").mkdir()
    one_line_error(tmp_path / "empty_dir")

    tiny = make_tiny_clip(tmp_path / "tiny")
    state = tapkit.load_clip(tiny.folder).model.state_dict()
    torch.save(state, tmp_path / "bare.pt")
    assert "tokenizer" in one_line_error(tmp_path / "bare.pt")
    del state["visual.ln_post.weight"]
    torch.save(state, tmp_path / "cut.pt")
    assert "visual.ln_post.weight" in one_line_error(tmp_path / "cut.pt", tokenizer=tiny.folder)
    (tiny.folder / "open_clip_config.json").write_text("{not json")
    one_line_error(tiny.folder)
    (tiny.folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 24, "vision_cfg": {
        "layers": [3, 4, 6, 3], "width": 64}, "text_cfg": {}}}))
    assert "ResNet" in one_line_error(tiny.folder)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.json").write_text("[1, 2]")
    (tmp_path / "tok" / "merges.txt").write_text("a b\n")
    one_line_error(tmp_path / "bare.pt", tokenizer=tmp_path / "tok")
