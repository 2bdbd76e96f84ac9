"""Train minicohere's own small tokenizer: Command-R's pipeline, 4096 tokens.

Same normaliser, pre-tokenizer, model, decoder and post-processor as Command-R's
tokenizer.json, and the same special-token names (ids 0..7 exactly as in the real
one, then the turn tokens the chat / rag / tool-use templates use), trained with the
`tokenizers` library on the synthetic corpus of scripts/make_corpus.py.

    python scripts/train_tokenizer.py                  # writes assets/tokenizer/
    python scripts/train_tokenizer.py --out /tmp/tok   # somewhere else

Deterministic: the same corpus seed gives the same tokenizer.json, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from make_corpus import build_corpus  # noqa: E402
from minicohere.tokenizer import BUILTIN_CHAT_TEMPLATES  # noqa: E402

VOCAB_SIZE = 4096
# ids 0..7 as in Command-R's tokenizer; the turn tokens follow (255000.. in the real one)
SPECIAL_TOKENS = [
    "<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<EOP_TOKEN>",
    "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
    "<|SYSTEM_TOKEN|>",
]


def build_empty_tokenizer() -> Tokenizer:
    """An untrained tokenizer with Command-R's pipeline around a BPE model."""
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train(texts, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    tok = build_empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id("<BOS_TOKEN>")
    tok.post_processor = processors.TemplateProcessing(
        single="<BOS_TOKEN> $A", pair="<BOS_TOKEN> $A $B:1", special_tokens=[("<BOS_TOKEN>", bos_id)])
    for i, t in enumerate(SPECIAL_TOKENS):  # the trainer puts them first, in order
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "CohereTokenizer",
        "bos_token": "<BOS_TOKEN>",
        "eos_token": "<|END_OF_TURN_TOKEN|>",
        "pad_token": "<PAD>",
        "unk_token": "<UNK>",
        "cls_token": "<CLS>",
        "sep_token": "<SEP>",
        "mask_token": "<MASK_TOKEN>",
        "add_bos_token": True,
        "add_eos_token": False,
        "padding_side": "left",
        "chat_template": [{"name": n, "template": t} for n, t in BUILTIN_CHAT_TEMPLATES.items()],
    }


def save(tok: Tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=False)
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "assets" / "tokenizer")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (see make_corpus.py)")
    ap.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = ap.parse_args(argv)
    if args.vocab_size < 256 + len(SPECIAL_TOKENS):
        raise SystemExit(f"--vocab-size {args.vocab_size} is too small: it must hold the 256 bytes "
                         f"and {len(SPECIAL_TOKENS)} special tokens")
    t0 = time.time()
    train_texts, _ = build_corpus(seed=args.seed)
    tok = train(train_texts, args.vocab_size)
    save(tok, args.out)
    print(f"trained {tok.get_vocab_size()} tokens on {len(train_texts)} documents in "
          f"{time.time() - t0:.1f}s -> {args.out}")


if __name__ == "__main__":
    main()
