"""SCA on tiny random models built from transformers configs (no downloads): shapes
forward and backward, frozen parts stay frozen, greedy and beam search, the released
checkpoints' key mapping, tapkit SCA checkpoints, and a tiny training run."""

import json

import numpy as np
import pytest
import torch
import transformers

import tapkit
from tapkit.cli.main import main
from tapkit.models.sca.build import build_sca, save_sca
from tapkit.models.sca.config import TASKS, MixerConfig
from tapkit.models.sca.generation import GenerationConfig, beam_search, greedy
from tapkit.models.sca.keys import released_state_from_tapkit, tapkit_state_from_released
from tapkit.models.sca.mixer import TextFeatureMixer
from tapkit.models.sca.model import IGNORE_INDEX, CaptionBatch
from tapkit.models.sca.tokenizer import load_caption_tokenizer
from tapkit.inputs.labels import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, PADDING
from tapkit.testing import make_tiny_sam_checkpoint, randomize


TINY_MIXER = MixerConfig(depth=2, num_caption_tokens=4, num_heads=2, mlp_dim=64)


def tiny_gpt2(vocab: int, eos: int, seed: int = 0, layers: int = 2):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=layers, n_head=2, bos_token_id=eos, eos_token_id=eos)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_files):
    return load_caption_tokenizer(tiny_files.tokenizer)


@pytest.fixture
def sca(tmp_path, tokenizer):
    backbone = tapkit.load_model(make_tiny_sam_checkpoint(tmp_path / "sam.pth", seed=1), device="cpu")
    model = build_sca(backbone, tiny_gpt2(tokenizer.vocab_size, tokenizer.eos_id), tokenizer, TINY_MIXER)
    return randomize_trainable(model)


def randomize_trainable(model, seed=0):
    randomize(model.mixer, seed)
    randomize(model.projection, seed + 1)
    randomize(model.task_tokens, seed + 2)
    return model


def prompts_batch():
    xy = torch.tensor([[[30.0, 40.0], [0.0, 0.0]], [[10.0, 12.0], [90.0, 80.0]], [[100.0, 5.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, PADDING], [BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], [0, PADDING]])
    return xy, labels


def caption_batch(tokenizer, texts, tasks):
    rows = [tokenizer.encode(t) + [tokenizer.eos_id] for t in texts]
    ids = torch.full((len(rows), max(map(len, rows))), IGNORE_INDEX)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return CaptionBatch(ids, torch.tensor([TASKS.index(t) for t in tasks]))


def test_paper_setting_has_19_4m_trainable_parameters_with_gpt2_large():
    mixer = TextFeatureMixer(256, MixerConfig())  # 12 layers, 8 query tokens
    hidden = 1280  # GPT2-large
    projection = 256 * hidden + hidden
    task_tokens = len(TASKS) * 6 * hidden
    total = sum(p.numel() for p in mixer.parameters()) + projection + task_tokens
    assert round(total / 1e6, 1) == 19.4


def test_forward_and_backward_shapes_and_only_the_mixer_learns(sca, tokenizer):
    embed = torch.randn(1, 64, 8, 8)
    xy, labels = prompts_batch()
    out = sca.decode(embed, xy, labels)
    q, c = TINY_MIXER.num_queries, 64
    assert out.mask_logits.shape == (3, 4, 32, 32) and out.sem_tokens.shape == (3, 4, q, c)
    queries = out.sem_tokens[:, 0]
    batch = caption_batch(tokenizer, ["a red circle", "a small blue square left of a star", "circle"], ["caption", "caption", "recognition"])
    result = sca.caption_loss(queries, batch)
    assert result.logits.shape == (3, batch.ids.shape[1], tokenizer.vocab_size)
    assert result.loss.ndim == 0 and torch.isfinite(result.loss)
    result.loss.backward()
    for name, p in sca.named_parameters():
        trainable = name.startswith(("mixer.", "projection.", "task_tokens."))
        assert p.requires_grad == trainable, name
        assert (p.grad is not None) == trainable, name
    used_tasks = sca.task_tokens.weight.grad.view(len(TASKS), 6, -1).abs().sum(dim=(1, 2))
    assert (used_tasks > 0).all()  # both task prefixes were used


def test_prefix_is_task_tokens_then_projected_queries(sca):
    queries = torch.randn(2, TINY_MIXER.num_queries, 64)
    prefix = sca.prefix(queries, torch.tensor([1, 0]))
    assert prefix.shape == (2, 6 + TINY_MIXER.num_queries, 32)
    torch.testing.assert_close(prefix[0, :6], sca.task_tokens.weight[6:12])
    torch.testing.assert_close(prefix[1, :6], sca.task_tokens.weight[:6])
    torch.testing.assert_close(prefix[0, 6:], sca.projection(queries[0]))


def test_loss_is_label_smoothed_cross_entropy_of_the_shifted_caption(sca, tokenizer):
    queries = torch.randn(2, TINY_MIXER.num_queries, 64)
    batch = caption_batch(tokenizer, ["a red circle", "star"], ["caption", "caption"])
    out = sca.caption_loss(queries, batch, label_smoothing=0.1)
    # the last prefix position predicts the first caption piece: compare with a plain LM call
    prefix = sca.prefix(queries, batch.task)
    ids = batch.ids[0][batch.ids[0] != IGNORE_INDEX]
    embeds = torch.cat([prefix[:1], sca.language_model.get_input_embeddings()(ids[:-1]).unsqueeze(0)], dim=1)
    logits = sca.language_model(inputs_embeds=embeds).logits[0, prefix.shape[1] - 1 :]
    torch.testing.assert_close(out.logits[0, : len(ids)], logits, rtol=1e-4, atol=1e-4)
    valid = batch.ids != IGNORE_INDEX
    logp = out.logits.log_softmax(-1)[valid]
    target = batch.ids[valid]
    expected = (0.9 * -logp.gather(1, target[:, None]).squeeze(1) + 0.1 * -logp.mean(-1)).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)


def test_frozen_parts_stay_frozen_through_training_steps(sca, tokenizer):
    before = {k: v.clone() for k, v in sca.state_dict().items()}
    sca.train()
    assert not sca.backbone.training and not sca.language_model.training and sca.mixer.training
    opt = torch.optim.AdamW([p for p in sca.parameters() if p.requires_grad], lr=1e-2)
    embed = torch.randn(1, 64, 8, 8)
    xy, labels = prompts_batch()
    batch = caption_batch(tokenizer, ["a red circle", "a blue star", "square"], ["caption"] * 3)
    for _ in range(2):
        queries = sca.decode(embed, xy, labels).sem_tokens[:, 0]
        sca.caption_loss(queries, batch).loss.backward()
        opt.step()
        opt.zero_grad()
    after = sca.state_dict()
    for k in before:
        changed = not torch.equal(before[k], after[k])
        assert changed == k.startswith(("mixer.", "projection.", "task_tokens.")), k


def test_tiny_training_run_lowers_the_loss(sca, tokenizer):
    torch.manual_seed(0)
    # A default-initialized tiny LM barely reacts to its input; large random weights make
    # the prefix matter, as it does for a trained LM.
    randomize(sca.language_model, seed=7, scale=1.0)
    embed = torch.randn(1, 64, 8, 8)
    xy, labels = prompts_batch()
    batch = caption_batch(tokenizer, ["a red circle", "a small blue square", "a green star above a circle"], ["caption"] * 3)
    opt = torch.optim.AdamW([p for p in sca.parameters() if p.requires_grad], lr=3e-3)
    sca.train()
    losses = []
    for _ in range(30):
        queries = sca.decode(embed, xy, labels).sem_tokens[:, 0]
        loss = sca.caption_loss(queries, batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def _greedy_without_cache(lm, prefix, eos, max_new):
    out = []
    for row in prefix:
        seq, embeds = [], row.unsqueeze(0)
        for _ in range(max_new):
            token = int(lm(inputs_embeds=embeds).logits[0, -1].argmax())
            if token == eos:
                break
            seq.append(token)
            embeds = torch.cat([embeds, lm.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
        out.append(seq)
    return out


@torch.no_grad()
def test_greedy_with_cache_matches_full_recomputation():
    lm = tiny_gpt2(vocab=12, eos=11, seed=3)
    prefix = torch.randn(5, 7, 32) * 3
    assert greedy(lm, prefix, 11, 9) == _greedy_without_cache(lm, prefix, 11, 9)


@torch.no_grad()
def test_beam_of_one_is_greedy():
    lm = tiny_gpt2(vocab=12, eos=11, seed=4)
    prefix = torch.randn(4, 5, 32) * 3
    assert beam_search(lm, prefix, 11, GenerationConfig(max_new_tokens=8, num_beams=1)) == greedy(lm, prefix, 11, 8)


@torch.no_grad()
def test_wide_beam_finds_the_most_likely_sequence():
    vocab, eos, steps = 5, 4, 3
    lm = tiny_gpt2(vocab=vocab, eos=eos, seed=5)
    prefix = torch.randn(3, 4, 32) * 3

    def best_by_exhaustive_search(row):
        """Every sequence of at most `steps` tokens that ends at EOS or at the limit."""
        best, stack = (float("-inf"), []), [([], 0.0, prefix[row : row + 1])]
        while stack:
            seq, score, embeds = stack.pop()
            logp = lm(inputs_embeds=embeds).logits[0, -1].log_softmax(-1)
            for token in range(vocab):
                total = score + float(logp[token])
                if token == eos or len(seq) + 1 == steps:
                    best = max(best, (total, seq + [token]))
                else:
                    more = torch.cat([embeds, lm.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
                    stack.append((seq + [token], total, more))
        return best

    found = beam_search(lm, prefix, eos, GenerationConfig(max_new_tokens=steps, num_beams=vocab**2, length_penalty=0.0))
    narrow = beam_search(lm, prefix, eos, GenerationConfig(max_new_tokens=steps, num_beams=2, length_penalty=0.0))
    for row in range(3):
        score, seq = best_by_exhaustive_search(row)
        assert found[row] == [t for t in seq if t != eos]
        assert narrow[row] != found[row] or score == best_by_exhaustive_search(row)[0]


def write_released_directory(model, path):
    """A checkpoint as the released segment-caption-anything repos hold it: config.json
    (ScaConfig of their code) and model.safetensors in their naming."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    state = released_state_from_tapkit(model.learned_state_dict())
    # transformers saves the shared positional matrix once (the prompt encoder's alias is dropped)
    del state["prompt_encoder.shared_embedding.positional_embedding"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    mixer = model.cfg.mixer
    config = {
        "model_type": "sca",
        "architectures": ["ScaMultitaskV2Model"],
        "num_task_tokens": model.cfg.num_task_tokens,
        "text_config": model.language_model.config.to_dict(),
        "mask_caption_decoder_config": {
            "hidden_size": 64, "num_attention_heads": mixer.num_heads, "mlp_dim": 128, "num_hidden_layers": 2,
            "additional_num_hidden_layers": mixer.depth, "num_caption_tokens": mixer.num_caption_tokens,
            "num_caption_heads": mixer.num_caption_heads, "layer_norm_eps": 1e-6, "attention_downsample_rate": 2,
        },
    }
    (path / "config.json").write_text(json.dumps(config))
    return state


def test_released_naming_round_trip(sca):
    ours = sca.learned_state_dict()
    released = released_state_from_tapkit(ours)
    for name in (
        "vision_encoder.layers.0.attn.qkv.weight",
        "mask_decoder.additional_transformer.layers.1.layer_norm3.weight",
        "mask_decoder.additional_transformer.layer_norm_final_attn.bias",
        "mask_decoder.caption_tokens.weight",
        "mask_decoder.iou_prediction_head.proj_in.weight",
        "language_project.weight",
        "task_tokens.weight",
        "language_model.transformer.h.0.attn.c_attn.weight",
    ):
        assert name in released, name
    back = tapkit_state_from_released(released)
    assert set(back) == set(ours)
    del released["prompt_encoder.shared_embedding.positional_embedding"]  # as transformers saves it
    assert set(tapkit_state_from_released(released)) == set(ours)
    assert all(torch.equal(back[k], ours[k]) for k in ours)


@torch.no_grad()
def test_released_checkpoint_directory_loads_and_answers_the_same(sca, tokenizer, tmp_path):
    write_released_directory(sca, tmp_path / "released")
    loaded = tapkit.load_model(tmp_path / "released", tokenizer=tokenizer, device="cpu")
    assert loaded.family == "sca" and loaded.cfg.mixer == sca.cfg.mixer
    assert loaded.backbone.cfg.decoder.norm_eps == 1e-6  # the released SAM is transformers' port
    embed = torch.randn(1, 64, 8, 8)
    xy, labels = prompts_batch()
    ours, theirs = sca.decode(embed, xy, labels), loaded.decode(embed, xy, labels)
    torch.testing.assert_close(theirs.sem_tokens, ours.sem_tokens, rtol=1e-4, atol=1e-4)
    assert loaded.max_caption_tokens == 19 and sca.max_caption_tokens == 20  # the released limit (official max_length=20)
    sca.set_max_caption_tokens(19)
    assert loaded.caption(theirs.sem_tokens[:, 0]) == sca.caption(theirs.sem_tokens[:, 0])


def test_tapkit_sca_checkpoint_round_trip_and_cli(sca, tokenizer, tiny_files, tmp_path, rgb_image):
    from PIL import Image

    path = tmp_path / "sca.safetensors"
    (tmp_path / "tok.model").write_bytes(tiny_files.tokenizer.read_bytes())
    save_sca(sca, path, tokenizer_name="tok.model")
    loaded = tapkit.load_model(path, device="cpu")
    assert loaded.tokenizer is not None  # found next to the checkpoint
    for (k, v), (k2, v2) in zip(sorted(sca.learned_state_dict().items()), sorted(loaded.learned_state_dict().items())):
        assert k == k2 and torch.equal(v, v2)
    image = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(image)
    out = tmp_path / "out.json"
    assert main(["predict", str(image), "--checkpoint", str(path), "--box", "20,10,100,70", "--output", str(out), "--device", "cpu"]) == 0
    region = json.loads(out.read_text())["regions"][0]
    predictor = tapkit.Predictor(sca)
    predictor.set_image(rgb_image)
    expected = predictor.predict([tapkit.Prompt(box=(20, 10, 100, 70))])[0]
    assert isinstance(region["caption"], str) and region["caption"] == expected.caption
    assert region["concept"] is None
    assert main(["predict", str(image), "--checkpoint", str(path), "--box", "20,10,100,70", "--concepts", str(tiny_files.concepts)]) == 2
    beam = tmp_path / "beam.json"
    assert main(["predict", str(image), "--checkpoint", str(path), "--box", "20,10,100,70", "--num-beams", "3", "--output", str(beam)]) == 0
    assert isinstance(json.loads(beam.read_text())["regions"][0]["caption"], str)


def test_mixer_sits_on_a_tap_backbone_too(tiny_files, tokenizer):
    backbone = tapkit.load_model(tiny_files.checkpoint, device="cpu")
    model = build_sca(backbone, tiny_gpt2(tokenizer.vocab_size, tokenizer.eos_id), tokenizer, TINY_MIXER)
    predictor = tapkit.Predictor(model)
    predictor.set_image(np.zeros((40, 60, 3), np.uint8))
    region = predictor.predict([tapkit.Prompt(points=[(10, 10, 1)])])[0]
    assert isinstance(region.caption, str) and region.mask.shape == (40, 60)
    decoded = predictor.decode_points(predictor.encode_prompts([tapkit.Prompt(box=(5, 5, 30, 30))])[0][None])
    assert decoded.sem_tokens.shape == (1, TINY_MIXER.num_queries, backbone.cfg.image_decoder.embed_dim)


# --- the official caption limit and text cleanup (issue 13 item 2) ------------------


class _NeverEnding:
    """A caption tokenizer whose EOS the LM never produces; records generated lengths."""

    def __init__(self, vocab_size):
        self.eos_id, self.vocab_size, self.lengths = 10**6, vocab_size, []

    def decode(self, ids):
        self.lengths.append(len(ids))
        return " ".join(map(str, ids))


@torch.no_grad()
def test_released_checkpoints_generate_at_most_19_tokens(sca, tokenizer, tmp_path):
    """generate(max_length=20) of the official code counts its virtual BOS."""
    write_released_directory(sca, tmp_path / "released")
    counting = _NeverEnding(tokenizer.vocab_size)
    loaded = tapkit.load_model(tmp_path / "released", tokenizer=counting, device="cpu")
    assert loaded.max_caption_tokens == 19
    xy, labels = prompts_batch()
    loaded.caption(loaded.decode(torch.randn(1, 64, 8, 8), xy, labels).sem_tokens[:, 0])
    assert counting.lengths == [19, 19, 19]
    loaded.set_max_caption_tokens(5)
    loaded.caption(loaded.decode(torch.randn(1, 64, 8, 8), xy, labels).sem_tokens[:, 0])
    assert counting.lengths[3:] == [5, 5, 5]
    with pytest.raises(ValueError, match="1 to"):
        loaded.set_max_caption_tokens(0)


def test_max_caption_tokens_flag(sca, tokenizer, tiny_files, tmp_path, rgb_image, capsys):
    from PIL import Image

    path = tmp_path / "sca.safetensors"
    (tmp_path / "tok.model").write_bytes(tiny_files.tokenizer.read_bytes())
    save_sca(sca, path, tokenizer_name="tok.model")
    image = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(image)
    box = tapkit.Prompt(box=(20, 10, 100, 70))
    for checkpoint, model in ((path, sca), (tiny_files.checkpoint, tapkit.load_model(tiny_files.checkpoint, tokenizer=tiny_files.tokenizer, device="cpu"))):
        out = tmp_path / "out.json"
        args = ["predict", str(image), "--checkpoint", str(checkpoint), "--box", "20,10,100,70", "--output", str(out), "--max-caption-tokens", "2"]
        if checkpoint == tiny_files.checkpoint:
            args += ["--tokenizer", str(tiny_files.tokenizer)]
        assert main(args) == 0
        full_limit = model.max_caption_tokens
        model.set_max_caption_tokens(2)
        predictor = tapkit.Predictor(model)
        predictor.set_image(rgb_image)
        short = predictor.predict([box])[0].caption
        assert json.loads(out.read_text())["regions"][0]["caption"] == short
        model.set_max_caption_tokens(full_limit)
        assert len(short) < len(predictor.predict([box])[0].caption)  # random weights write long captions
    assert main(["predict", str(image), "--checkpoint", str(path), "--box", "20,10,100,70", "--max-caption-tokens", "0"]) == 2
    assert "--max-caption-tokens" in capsys.readouterr().err


def test_tap_caption_limit_cuts_the_greedy_sequence(tiny_files):
    model = tapkit.load_model(tiny_files.checkpoint, tokenizer=tiny_files.tokenizer, device="cpu")
    assert model.max_caption_tokens == model.text_decoder.max_text_len - 1  # the reference's 38 at full size
    sem = torch.randn(3, model.cfg.image_decoder.embed_dim, generator=torch.Generator().manual_seed(0))
    full = model.text_decoder.generate(sem.unsqueeze(1), model.tokenizer.bos_id, model.tokenizer.eos_id)
    model.set_max_caption_tokens(1)
    assert model.caption(sem) == [model.tokenizer.decode(ids[:1]) for ids in full]
    with pytest.raises(ValueError, match="1 to"):
        model.set_max_caption_tokens(model.text_decoder.max_text_len)


def test_clean_up_spaces_is_transformers_rule():
    from tapkit.models.sca.tokenizer import clean_up_spaces

    assert clean_up_spaces("a dog on the grass .") == "a dog on the grass."
    assert clean_up_spaces("it 's a man , is n't it ?") == "it's a man, isn't it?"
    assert clean_up_spaces("the man 're here !") == "the man're here!"
    assert clean_up_spaces("no change") == "no change"


def test_hugging_face_tokenizer_decodes_with_the_official_cleanup(tmp_path):
    """Whatever the saved tokenizer's (or installed transformers') default, " ." -> "."."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["a dog on the grass .", "it 's a red car , is n't it ?"] * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", clean_up_tokenization_spaces=False)
    fast.save_pretrained(tmp_path / "tok")
    tok = load_caption_tokenizer(tmp_path / "tok")
    assert fast.decode(fast.encode("a dog on the grass .")) == "a dog on the grass ."  # the saved default: no cleanup
    assert tok.decode(tok.encode("a dog on the grass .") + [tok.eos_id, 5]) == "a dog on the grass."
    assert tok.decode(tok.encode("it 's a red car , is n't it ?")) == "it's a red car, isn't it?"
