import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tapkit.cli.main import main
from tapkit.data.sa1b import read_sa1b
from tapkit.data.semantic import OpenClipTeacher, SemanticTargets, StandInTeacher, build_semantic, concept_targets
from tapkit.data.synth import concept_names
from tapkit.data.text_encoders import HashText, OpenClipText, concept_weights
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


class TinyClip(nn.Module):
    """The slice of the open_clip model interface that tapkit uses."""

    def __init__(self, dim=16):
        super().__init__()
        self.visual = SimpleNamespace(image_size=8)
        self.image_proj = nn.Linear(3 * 8 * 8, dim)
        self.text_embed = nn.Embedding(100, dim)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(50.0), dtype=torch.float32))

    def encode_image(self, x):
        return self.image_proj(x.flatten(1))

    def encode_text(self, tokens):
        return self.text_embed(tokens).mean(1)


def _preprocess(image):
    return torch.from_numpy(np.asarray(image.resize((8, 8)), np.float32) / 255.0).permute(2, 0, 1)


def test_open_clip_teacher_embeds_masked_crops(tiny_world, tmp_path):
    torch.manual_seed(0)
    teacher = OpenClipTeacher(TinyClip(), _preprocess)
    record = read_sa1b(tiny_world.sa1b)[0]
    from tapkit.data.records import load_rgb

    regions, embeds = teacher.embed(load_rgb(record.path), record)
    assert len(regions) == len(record.regions) and embeds.shape == (len(regions), 16)
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(len(regions)), atol=1e-5)
    weights = torch.randn(16, 48)
    summary = build_semantic([record], teacher, weights, tmp_path, progress=False)
    assert summary.regions == len(regions) and SemanticTargets.load(tmp_path).get(record.image_id, regions[0].id) is not None


def test_open_clip_text_encoder_path(monkeypatch):
    fake = SimpleNamespace(get_tokenizer=lambda name: (lambda texts: torch.tensor([[len(t) % 100, 3] for t in texts])))
    monkeypatch.setattr("tapkit.data.text_encoders.import_open_clip", lambda: fake)
    torch.manual_seed(0)
    encoder = OpenClipText("tiny", model=TinyClip())
    assert encoder.dim == 16 and encoder.logit_scale == pytest.approx(50.0, rel=1e-4)
    w = concept_weights(["cat", "a dog"], encoder, ("{}",))
    assert w.shape == (16, 2) and np.allclose(np.linalg.norm(w, axis=0), 50.0, rtol=1e-4)


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
