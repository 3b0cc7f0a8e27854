import pickle

import numpy as np
import pytest
import torch

from tapkit.cli.main import main
from tapkit.data.sa1b import read_sa1b
from tapkit.data.semantic import ClipTeacher, SemanticTargets, StandInTeacher, build_semantic, concept_targets
from tapkit.data.synth import concept_names
from tapkit.data.text_encoders import ClipText, HashText, concept_weights
from tapkit.models.tap.concepts import ConceptVocabulary


def test_hash_text_shares_words():
    text = HashText(128)
    e = torch.nn.functional.normalize(text.encode(["red circle", "red star", "blue star", "red circle"]), dim=-1)
    assert torch.allclose(e[0], e[3])
    assert float(e[0] @ e[1]) > 0.3 and abs(float(e[0] @ e[2])) < 0.3


def test_concept_file_is_in_the_official_format(tmp_path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("red circle\nblue star\n# comment\n\ngreen square\n")
    out = tmp_path / "c.pkl"
    assert main(["concepts", "build", "--names", str(names_file), "--stand-in-dim", "32", "--out", str(out)]) == 0
    weights, names = pickle.loads(out.read_bytes())
    assert names == ["red circle", "blue star", "green square"]
    assert weights.shape == (32, 3) and weights.dtype == np.float32
    assert np.allclose(np.linalg.norm(weights, axis=0), 100.0, rtol=1e-4)  # normalized x logit scale
    vocab = ConceptVocabulary.load(out)
    assert vocab.top_k(torch.from_numpy(weights.T.copy()), 1).indices.flatten().tolist() == [0, 1, 2]
    assert main(["concepts", "build", "--names", str(names_file), "--out", str(out)]) == 2  # no encoder given


def test_targets_are_smoothed_and_peaked_on_the_concept():
    names = concept_names()
    text = HashText(64)
    w = torch.from_numpy(concept_weights(names, text))
    idx, prob = concept_targets(text.encode(["red circle", "blue star"]), w, temperature=10.0, k=8)
    assert idx[0, 0] == names.index("red circle") and idx[1, 0] == names.index("blue star")
    assert np.allclose(prob.sum(1), 1.0, atol=1e-5) and 0.5 < prob[0, 0] < 0.99 and (np.diff(prob, axis=1) <= 1e-7).all()


def test_semantic_shards_split_across_ranks(tiny_world, tmp_path):
    records = read_sa1b(tiny_world.sa1b)
    vocab = ConceptVocabulary.load(tiny_world.concepts)
    teacher = StandInTeacher(HashText(64))
    for rank in range(2):
        build_semantic(records, teacher, vocab.weights, tmp_path, rank=rank, world_size=2, shard_size=3, progress=False)
    split = SemanticTargets.load(tmp_path)
    whole = SemanticTargets.load(tiny_world.semantic)
    assert len(split) == len(whole) == sum(len(r.regions) for r in records)
    assert len(list(tmp_path.glob("semantic-00001-*.npz"))) >= 1
    for record in records:
        for region in record.regions:
            a, b = split.get(record.image_id, region.id), whole.get(record.image_id, region.id)
            assert np.array_equal(a.index, b.index)
            assert vocab.names[a.index[0]] == region.concept


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import tapkit
    from tapkit.testing import make_tiny_clip

    return tapkit.load_clip(make_tiny_clip(tmp_path_factory.mktemp("tiny_clip")).folder)


def test_clip_teacher_embeds_square_crops_of_every_region(tiny_world, tmp_path, tiny_clip):
    from tapkit.data.crops import square_crop
    from tapkit.data.records import load_rgb

    teacher = ClipTeacher(tiny_clip)
    record = read_sa1b(tiny_world.sa1b)[0]
    rgb = load_rgb(record.path)
    regions, embeds = teacher.embed(rgb, record)
    assert len(regions) == len(record.regions) and embeds.shape == (len(regions), 24)
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(len(regions)), atol=1e-5)
    alone = tiny_clip.encode_image([np.ascontiguousarray(square_crop(rgb, regions[0].bbox))])
    assert torch.allclose(embeds[0], alone[0], atol=1e-5)
    weights = torch.randn(24, 48)
    summary = build_semantic([record], teacher, weights, tmp_path, progress=False)
    assert summary.regions == len(regions) and SemanticTargets.load(tmp_path).get(record.image_id, regions[0].id) is not None


def test_clip_text_encoder_path(tiny_clip):
    encoder = ClipText(tiny_clip)
    assert encoder.dim == 24 and encoder.logit_scale == pytest.approx(tiny_clip.logit_scale)
    w = concept_weights(["cat", "a dog"], encoder, ("{}",))
    assert w.shape == (24, 2) and np.allclose(np.linalg.norm(w, axis=0), tiny_clip.logit_scale, rtol=1e-4)
    one = tiny_clip.encode_text(["cat"])[0] * tiny_clip.logit_scale
    assert np.allclose(w[:, 0], one.numpy(), atol=1e-4)


def test_data_cli_round_trip(tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path / "w"), "--images", "3", "--seed", "2", "--size", "64"]) == 0
    assert main(["concepts", "build", "--names", str(tmp_path / "w" / "concepts.txt"), "--stand-in-dim", "32",
                 "--out", str(tmp_path / "c.pkl")]) == 0
    assert main(["data", "semantic", "--sa1b", str(tmp_path / "w" / "sa1b"), "--concepts", str(tmp_path / "c.pkl"),
                 "--out", str(tmp_path / "sem"), "--teacher", "stand-in"]) == 0
    assert len(SemanticTargets.load(tmp_path / "sem")) > 0
    assert main(["data", "tokenizer", "--vg", str(tmp_path / "w" / "vg_regions.json"), "--out", str(tmp_path / "t.model"),
                 "--vocab-size", "40"]) == 0
    from tapkit.models.tap.tokenizer import TextTokenizer

    tok = TextTokenizer(tmp_path / "t.model")
    assert tok.decode(tok.encode("a small red circle")[1:]) == "a small red circle"
    assert main(["data", "semantic", "--sa1b", str(tmp_path / "nope"), "--concepts", str(tmp_path / "c.pkl"),
                 "--out", str(tmp_path / "x"), "--teacher", "stand-in"]) == 2
    assert main(["data", "synth", "--out", str(tmp_path / "z"), "--images", "0"]) == 2


def test_clip_cli_concepts_semantic_and_zero_shot(tmp_path, capsys):
    from tapkit.testing import make_tiny_clip

    clip_dir = make_tiny_clip(tmp_path / "clip").folder
    assert main(["data", "synth", "--out", str(tmp_path / "w"), "--images", "3", "--seed", "2", "--size", "64"]) == 0
    names = tmp_path / "w" / "concepts.txt"
    (tmp_path / "templates.txt").write_text("a {}.\n# a comment\nthe {} here\n")
    assert main(["concepts", "build", "--clip", str(clip_dir), "--names", str(names), "--templates",
                 str(tmp_path / "templates.txt"), "--out", str(tmp_path / "c.pkl")]) == 0
    weights, written = pickle.loads((tmp_path / "c.pkl").read_bytes())
    assert weights.dtype == np.float32 and weights.shape == (24, 48) and written == concept_names()
    import tapkit

    clip = tapkit.load_clip(clip_dir)
    expected = concept_weights(concept_names(), ClipText(clip), ("a {}.", "the {} here"))
    assert np.allclose(weights, expected, atol=1e-5)
    assert ConceptVocabulary.load(tmp_path / "c.pkl").embed_dim == 24

    assert main(["data", "semantic", "--sa1b", str(tmp_path / "w" / "sa1b"), "--concepts", str(tmp_path / "c.pkl"),
                 "--out", str(tmp_path / "sem"), "--teacher", "clip", "--clip", str(clip_dir)]) == 0
    assert len(SemanticTargets.load(tmp_path / "sem")) == sum(len(r.regions) for r in read_sa1b(tmp_path / "w" / "sa1b"))
    assert main(["data", "evaluate-clip", "--clip", str(clip_dir), "--sa1b", str(tmp_path / "w" / "sa1b"),
                 "--output", str(tmp_path / "zs.json")]) == 0
    import json

    report = json.loads((tmp_path / "zs.json").read_text())
    assert report["names"] == 48 and report["crops"] > 0 and 0 <= report["top1"] <= report["colour_right"] + 1e-9
    capsys.readouterr()
    # A template without {}, a CLIP that is not one, a 64-d concept file for a 24-d teacher: one line each.
    (tmp_path / "bad.txt").write_text("a photo\n")
    assert main(["concepts", "build", "--clip", str(clip_dir), "--names", str(names), "--templates",
                 str(tmp_path / "bad.txt"), "--out", str(tmp_path / "d.pkl")]) == 2
    assert main(["concepts", "build", "--clip", str(names), "--names", str(names), "--out", str(tmp_path / "e.pkl")]) == 2
    assert main(["concepts", "build", "--names", str(names), "--stand-in-dim", "64", "--out", str(tmp_path / "h.pkl")]) == 0
    assert main(["data", "semantic", "--sa1b", str(tmp_path / "w" / "sa1b"), "--concepts", str(tmp_path / "h.pkl"),
                 "--out", str(tmp_path / "sem2"), "--teacher", "clip", "--clip", str(clip_dir)]) == 2
    assert not (tmp_path / "d.pkl").exists() and not (tmp_path / "e.pkl").exists() and not (tmp_path / "sem2").exists()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 3 and all(": error: " in line for line in err.strip().splitlines()), err


def test_a_clip_given_to_a_prompting_command_is_one_line(tmp_path, capsys, rgb_image):
    from PIL import Image

    from tapkit.testing import make_tiny_clip

    Image.fromarray(rgb_image).save(tmp_path / "im.png")
    clip_dir = make_tiny_clip(tmp_path / "clip").folder
    assert main(["predict", str(tmp_path / "im.png"), "--checkpoint", str(clip_dir), "--point", "10,10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a CLIP" in err and len(err.splitlines()) == 1
