"""Pre-trains a small GPT-2-style causal language model on region captions, to be the
frozen language model of an SCA (the paper freezes a pre-trained GPT-2; the synthetic
world has no pre-trained model, so this makes one on its caption corpus).

The training text is `tapkit.training.caption_corpus.PackedCaptions`: packed captions,
a fraction `--hint-prob` of them preceded by their content words, so that the model
learns to read its context (a model trained on bare captions ignores it, and a visual
prefix then has nothing to steer; docs/sam_sca.md). The model is saved with
transformers' save_pretrained, ready for `sca.language_model`.

    python scripts/sca_pretrain_lm.py --vg scratch/world_train/vg_regions.json \
        --tokenizer scratch/tokenizer.model --out scratch/caption_lm
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm import tqdm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vg", type=Path, required=True, help="region captions, densecap/GRiT COCO-style JSON")
    parser.add_argument("--tokenizer", type=Path, required=True, help="SentencePiece model")
    parser.add_argument("--out", type=Path, required=True, help="output directory (transformers save_pretrained)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--context", type=int, default=64, help="tokens per training sequence (and the model's context)")
    parser.add_argument("--hint-prob", type=float, default=0.5,
                        help="fraction of captions preceded by their content words (teaches the LM to read context)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import transformers

    from tapkit.models.sca.tokenizer import load_caption_tokenizer
    from tapkit.training.caption_corpus import PackedCaptions

    tok = load_caption_tokenizer(args.tokenizer)
    by_image: dict = {}
    for a in json.loads(args.vg.read_text())["annotations"]:
        if a.get("caption"):
            by_image.setdefault(a["image_id"], []).append(a["caption"])
    corpus = PackedCaptions(list(by_image.values()), tok, args.context, args.hint_prob, args.seed)

    torch.manual_seed(args.seed)
    cfg = transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=args.context, n_embd=args.dim, n_layer=args.layers,
                                  n_head=args.heads, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    model = transformers.GPT2LMHeadModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    bar = tqdm(range(args.steps), desc="caption LM", unit="step")
    for step in bar:
        lr = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = torch.tensor([corpus.sample() for _ in range(args.batch)])
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval().save_pretrained(args.out)
    print(f"saved {args.out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, last loss {loss.item():.3f})")


if __name__ == "__main__":
    main()
