"""Decoding captions from a causal language model given a prefix of input embeddings:
greedy (with the key/value cache, finished sequences dropped from the batch) and beam
search. Works with any transformers AutoModelForCausalLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class GenerationConfig:
    """max_new_tokens: tokens generated after the prefix (EOS included). num_beams: 1 is
    greedy. length_penalty: finished beams are ranked by sum of log-probabilities divided
    by (generated length ** length_penalty); 0 ranks by the plain sum."""

    max_new_tokens: int = 20
    num_beams: int = 1
    length_penalty: float = 1.0


def select_cache(past, index: torch.Tensor):
    """Keeps (and reorders) the batch rows `index` of a key/value cache."""
    if hasattr(past, "reorder_cache"):
        past.reorder_cache(index)
        return past
    return tuple(tuple(t.index_select(0, index.to(t.device)) for t in layer) for layer in past)


def _step(lm, embeds: torch.Tensor, past=None):
    out = lm(inputs_embeds=embeds, past_key_values=past, use_cache=True)
    return out.logits[:, -1].float(), out.past_key_values


def _cut(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


@torch.inference_mode()
def greedy(lm, prefix: torch.Tensor, eos_id: int, max_new_tokens: int) -> list[list[int]]:
    """prefix: (N, L, H) input embeddings. Returns, per row, the generated ids before EOS."""
    n = prefix.shape[0]
    outputs: list[list[int]] = [[] for _ in range(n)]
    if n == 0 or max_new_tokens <= 0:
        return outputs
    embed = lm.get_input_embeddings()
    logits, past = _step(lm, prefix)
    active = torch.arange(n, device=prefix.device)
    for step in range(max_new_tokens):
        tokens = logits.argmax(-1)
        for row, token in zip(active.tolist(), tokens.tolist()):
            if token != eos_id:
                outputs[row].append(token)
        alive = tokens.ne(eos_id)
        if step == max_new_tokens - 1 or not bool(alive.any()):
            break
        if not bool(alive.all()):
            keep = alive.nonzero().squeeze(1)
            active, tokens, past = active[keep], tokens[keep], select_cache(past, keep)
        logits, past = _step(lm, embed(tokens.unsqueeze(1)), past)
    return outputs


@torch.inference_mode()
def beam_search(lm, prefix: torch.Tensor, eos_id: int, cfg: GenerationConfig) -> list[list[int]]:
    """Beam search with `cfg.num_beams` beams per row. A beam that emits EOS is finished:
    it stays in the beam with its score and competes with the unfinished ones."""
    n, k = prefix.shape[0], cfg.num_beams
    if n == 0 or cfg.max_new_tokens <= 0:
        return [[] for _ in range(n)]
    device = prefix.device
    embed = lm.get_input_embeddings()
    logits, past = _step(lm, prefix)
    vocab = logits.shape[-1]
    past = select_cache(past, torch.arange(n, device=device).repeat_interleave(k))
    logp = F.log_softmax(logits, dim=-1).unsqueeze(1).expand(n, k, vocab)
    # Only the first beam is live at the start; the others join as the best expansions.
    scores = torch.full((n, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    seqs = torch.empty((n, k, 0), dtype=torch.long, device=device)
    finished = torch.zeros((n, k), dtype=torch.bool, device=device)
    lengths = torch.zeros((n, k), device=device)
    frozen = torch.full((vocab,), float("-inf"), device=device)
    frozen[eos_id] = 0.0
    rows = torch.arange(n, device=device).unsqueeze(1)
    for step in range(cfg.max_new_tokens):
        logp = torch.where(finished.unsqueeze(-1), frozen, logp)
        candidates = (scores.unsqueeze(-1) + logp).reshape(n, k * vocab)
        scores, flat = candidates.topk(k, dim=-1)
        beam, token = flat // vocab, flat % vocab
        seqs = torch.cat([seqs[rows, beam], token.unsqueeze(-1)], dim=-1)
        was_finished = finished[rows, beam]
        lengths = lengths[rows, beam] + (~was_finished).float()
        finished = was_finished | token.eq(eos_id)
        if step == cfg.max_new_tokens - 1 or bool(finished.all()):
            break
        past = select_cache(past, (rows * k + beam).reshape(-1))
        logits, past = _step(lm, embed(token.reshape(-1, 1)), past)
        logp = F.log_softmax(logits, dim=-1).view(n, k, vocab)
    ranked = scores / lengths.clamp(min=1.0) ** cfg.length_penalty
    best = ranked.argmax(dim=-1)
    return [_cut(seqs[i, best[i]].tolist(), eos_id) for i in range(n)]


def generate(lm, prefix: torch.Tensor, eos_id: int, cfg: GenerationConfig) -> list[list[int]]:
    if cfg.num_beams <= 1:
        return greedy(lm, prefix, eos_id, cfg.max_new_tokens)
    return beam_search(lm, prefix, eos_id, cfg)
