"""Pre-trains a small GPT-2-style causal language model on region captions, to be the
frozen language model of an SCA (the paper freezes a pre-trained GPT-2; the synthetic
world has no pre-trained model, so this makes one on its caption corpus).

Training sequences are packed like GPT-2's: the captions of one image, in random order,
each followed by EOS (GPT-2's end-of-text token also starts a text), then the next
image's, cut at the context length. So every position is trained (SCA's captions
start after a 14-token prefix), and the model learns to use its context: a caption
often names shapes that earlier captions of the same image named, which is what lets a
visual prefix steer it later. The model is saved with transformers' save_pretrained,
ready for `sca.language_model`.

    python scripts/sca_pretrain_lm.py --vg scratch/world_train/vg_regions.json \
        --tokenizer scratch/tokenizer.model --out scratch/caption_lm
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import transformers

    from tapkit.models.sca.tokenizer import load_caption_tokenizer

    tok = load_caption_tokenizer(args.tokenizer)
    by_image: dict = {}
    for a in json.loads(args.vg.read_text())["annotations"]:
        if a.get("caption"):
            by_image.setdefault(a["image_id"], []).append([tok.eos_id] + tok.encode(a["caption"]))
    documents = list(by_image.values())
    rng = np.random.default_rng(args.seed)

    def sequence() -> list[int]:
        out: list[int] = []
        while len(out) <= args.context:
            captions = documents[rng.integers(len(documents))]
            for k in rng.permutation(len(captions)):
                out += captions[k]
        return out[: args.context + 1]

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
        batch = torch.tensor([sequence() for _ in range(args.batch)])
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
