import math

import pytest
import torch

from tapkit.models.tap.config import TextDecoderConfig
from tapkit.models.tap.text_decoder import KVCache, TextDecoder, apply_rotary, rotary_tables
from tapkit.testing import randomize


def test_rotary_matches_complex_rotation():
    torch.manual_seed(0)
    length, heads, dim = 6, 2, 8
    x = torch.randn(3, length, heads, dim)
    cos, sin = rotary_tables(length, dim, torch.float32)
    out = apply_rotary(x, cos, sin)
    for pos in range(length):
        for i in range(dim // 2):
            theta = pos / (10000 ** (2 * i / dim))
            z = torch.complex(x[:, pos, :, 2 * i], x[:, pos, :, 2 * i + 1]) * complex(math.cos(theta), math.sin(theta))
            torch.testing.assert_close(out[:, pos, :, 2 * i], z.real, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out[:, pos, :, 2 * i + 1], z.imag, rtol=1e-5, atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(1)
    dim = 16
    q, k = torch.randn(1, 1, 1, dim), torch.randn(1, 1, 1, dim)
    cos, sin = rotary_tables(20, dim, torch.float32)
    def score(pq, pk):
        rq = apply_rotary(q, cos[pq : pq + 1], sin[pq : pq + 1])
        rk = apply_rotary(k, cos[pk : pk + 1], sin[pk : pk + 1])
        return (rq * rk).sum()
    torch.testing.assert_close(score(5, 2), score(13, 10), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3))


def _decoder(vocab=50, seed=0):
    cfg = TextDecoderConfig(depth=2, embed_dim=64, num_heads=2, prompt_embed_dim=32, vocab_size=vocab, max_seq_len=12)
    torch.manual_seed(seed)
    return randomize(TextDecoder(cfg), seed=seed, scale=1.0).eval()


def _greedy_without_cache(dec, prompts, bos, eos, limit):
    outs = []
    for row in range(prompts.shape[0]):
        tokens = [bos]
        for _ in range(limit):
            logits = dec(prompts[row : row + 1], torch.tensor([tokens]))
            nxt = int(logits[0, -1].argmax())
            if nxt == eos:
                break
            tokens.append(nxt)
        outs.append(tokens[1:])
    return outs


@pytest.mark.parametrize("eos", [2, 7])
def test_kv_cache_decoding_equals_full_decoding(eos):
    dec = _decoder()
    prompts = torch.randn(5, 1, 32)
    cached = dec.generate(prompts, bos_id=1, eos_id=eos)
    full = _greedy_without_cache(dec, prompts, 1, eos, dec.max_text_len - 1)
    assert cached == full
    assert all(len(seq) <= dec.cfg.max_seq_len - 2 for seq in cached)


def test_cached_logits_equal_full_logits_step_by_step():
    dec = _decoder(seed=3)
    prompts = torch.randn(2, 1, 32)
    tokens = torch.randint(3, 50, (2, 6))
    tokens[:, 0] = 1
    full = dec(prompts, tokens)
    cache = KVCache.empty(dec.cfg, 2, torch.float32, "cpu")
    with torch.no_grad():
        step_logits = [dec.prefill(prompts, tokens[:, :1], cache)]
        for t in range(1, tokens.shape[1]):
            step_logits.append(dec.step(tokens[:, t : t + 1], cache))
    torch.testing.assert_close(torch.stack(step_logits, 1), full, rtol=1e-4, atol=1e-4)


def test_batched_generation_equals_one_at_a_time():
    dec = _decoder(seed=4)
    prompts = torch.randn(4, 1, 32)
    together = dec.generate(prompts, 1, 2)
    alone = [dec.generate(prompts[i : i + 1], 1, 2)[0] for i in range(4)]
    assert together == alone


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_decoding_runs_and_stays_close(dtype):
    dec = _decoder(seed=5)
    prompts = torch.randn(3, 1, 32)
    tokens = torch.randint(3, 50, (3, 5))
    ref = dec(prompts, tokens)
    low = dec.to(dtype)(prompts.to(dtype), tokens)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()
    assert len(dec.generate(prompts.to(dtype), 1, 2)) == 3
