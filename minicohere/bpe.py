"""Command-R's byte-level BPE tokenizer, written from scratch in plain Python.

This is the same algorithm the `tokenizers` library runs for Command-R (see
`minicohere.tokenizer.Tokenizer`, which wraps the fast library), spelled out one step
at a time so a notebook can show each piece on its own:

    text
     -> split_on_added_tokens   special tokens such as <|USER_TOKEN|> are cut out first
     -> nfc                     Unicode NFC normalisation of the ordinary text
     -> pretokenize             digits one by one, then the GPT-2 regex ("words")
     -> to_byte_chars           each word's UTF-8 bytes as printable characters
     -> bpe_merge_word          merges applied by rank, lowest rank first
     -> vocab lookup            symbols -> ids
    (encode puts <BOS_TOKEN> in front unless add_special_tokens=False, as Tokenizer.encode does)

`decode` runs it backwards. Readable rather than fast: results are memoised per word,
which is what makes it usable on the real 255k vocabulary.
"""

from __future__ import annotations

import gzip
import json
import unicodedata
from pathlib import Path

import regex  # the `regex` module: \p{L}, \p{N} classes, like the Rust library

# GPT-2's pre-tokenization pattern: contractions, letter runs, number runs, punctuation
# runs (each optionally with one leading space), then whitespace. `\s+(?!\S)` leaves the
# last space of a whitespace run to be glued to the next word (" world").
GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
# Command-R splits every numeric character into its own piece before the GPT-2 split,
# so "2024" is four tokens, never one.
DIGIT_PATTERN = regex.compile(r"\p{N}")


def bytes_to_unicode() -> dict[int, str]:
    """Map each of the 256 byte values to a printable character.

    Printable Latin-1 bytes map to themselves; the others (control characters, space,
    ...) are moved to code points 256 and up, in byte order. So byte 32 (space) becomes
    'Ġ' (U+0120) and byte 10 (newline) becomes 'Ċ' (U+010A): every token is a string
    of visible characters.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    mapping = {}
    next_free = 256
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(next_free)
            next_free += 1
    return mapping


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def nfc(text: str) -> str:
    """Unicode NFC: 'e' + combining acute accent becomes the single character 'é'."""
    return unicodedata.normalize("NFC", text)


def split_digits(text: str) -> list[str]:
    """Cut `text` around every numeric character: 'ab 12' -> ['ab ', '1', '2']."""
    pieces, start = [], 0
    for m in DIGIT_PATTERN.finditer(text):
        if m.start() > start:
            pieces.append(text[start:m.start()])
        pieces.append(m.group())
        start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def pretokenize(text: str) -> list[str]:
    """Split normalised text into the "words" BPE works on (no merge crosses them)."""
    words = []
    for piece in split_digits(text):
        words.extend(GPT2_PATTERN.findall(piece))
    return words


def to_byte_chars(word: str) -> str:
    """A word's UTF-8 bytes, each shown as its `bytes_to_unicode` character."""
    return "".join(BYTE_TO_CHAR[b] for b in word.encode("utf-8"))


def token_to_bytes(token: str) -> bytes:
    """Invert `to_byte_chars` for one token. Tokens with characters outside the byte
    alphabet (added tokens written as plain text) stand for their own UTF-8 bytes."""
    if all(c in CHAR_TO_BYTE for c in token):
        return bytes(CHAR_TO_BYTE[c] for c in token)
    return token.encode("utf-8")


def bpe_merge_word(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges to one word until none applies.

    At each step, find the adjacent pair with the lowest merge rank (the merge learned
    earliest in training) and fuse it everywhere in the word, left to right.
    """
    symbols = list(symbols)
    while len(symbols) > 1:
        best = min(zip(symbols, symbols[1:]), key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def read_tokenizer_json(path: str | Path) -> dict:
    """Load a `tokenizer.json` (plain, or gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None


class ByteLevelBPE:
    """Byte-level BPE encoder/decoder built from a vocabulary, merges and added tokens.

    `added_tokens` are dicts like tokenizer.json's: {"id", "content", "special",
    "lstrip", "rstrip", "single_word", "normalized"}.
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]],
                 added_tokens: list[dict] = (), bos_token: str | None = "<BOS_TOKEN>"):
        self.vocab = dict(vocab)
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self.added = {t["content"]: t for t in added_tokens}
        for t in added_tokens:
            self.vocab[t["content"]] = t["id"]
        self.id_to_token = {i: tok for tok, i in self.vocab.items()}
        self.bos_token = bos_token
        if bos_token is not None and bos_token not in self.vocab:
            raise ValueError(f"bos_token {bos_token!r} is not in the vocabulary")
        # one alternation per matching stage, longest first so "<|A|>x" never loses to "<|A|>"
        self._raw_pattern = self._added_pattern(normalized=False)
        self._norm_pattern = self._added_pattern(normalized=True)
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> "ByteLevelBPE":
        """Build from a Hugging Face `tokenizer.json` (or `tokenizer.json.gz`)."""
        data = read_tokenizer_json(path)
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"{path}: expected a BPE model, found {model.get('type')!r}")
        # merges are stored either as "a b" strings (older files) or as [a, b] pairs
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        bos = _bos_from_post_processor(data.get("post_processor"))
        return cls(model["vocab"], merges, data.get("added_tokens", []), bos_token=bos)

    # -- added / special tokens ------------------------------------------------------

    def _added_pattern(self, normalized: bool):
        contents = sorted((c for c, t in self.added.items() if bool(t.get("normalized")) == normalized),
                          key=len, reverse=True)
        if not contents:
            return None
        return regex.compile("|".join(regex.escape(c) for c in contents))

    def split_on_added_tokens(self, text: str, pattern=None) -> list[tuple[str, bool]]:
        """Cut `text` into (piece, is_added_token) parts, leftmost-longest match first.

        Honours the token flags: `lstrip`/`rstrip` let the token swallow whitespace on
        that side, `single_word` only matches when not inside a word.
        """
        pattern = self._raw_pattern if pattern is None else pattern
        if pattern is None:
            return [(text, False)] if text else []
        parts, start = [], 0
        for m in pattern.finditer(text):
            tok = self.added[m.group()]
            s, e = m.start(), m.end()
            if s < start:  # overlapped by an earlier rstrip
                continue
            if tok.get("single_word") and ((s > 0 and _is_word_char(text[s - 1]))
                                            or (e < len(text) and _is_word_char(text[e]))):
                continue
            if tok.get("lstrip"):
                while s > start and text[s - 1].isspace():
                    s -= 1
            if tok.get("rstrip"):
                while e < len(text) and text[e].isspace():
                    e += 1
            if s > start:
                parts.append((text[start:s], False))
            parts.append((m.group(), True))
            start = e
        if start < len(text):
            parts.append((text[start:], False))
        return parts

    # -- encoding --------------------------------------------------------------------

    def encode_word(self, word: str) -> list[int]:
        """ids of one pre-tokenized word (memoised: real text repeats words a lot)."""
        ids = self._cache.get(word)
        if ids is None:
            symbols = bpe_merge_word(list(to_byte_chars(word)), self.ranks)
            try:
                ids = [self.vocab[s] for s in symbols]
            except KeyError as e:
                raise ValueError(f"symbol {e.args[0]!r} of word {word!r} is not in the vocabulary") from None
            self._cache[word] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text that holds no added tokens: normalise, pre-tokenize, merge."""
        ids = []
        for word in pretokenize(nfc(text)):
            ids.extend(self.encode_word(word))
        return ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Text -> ids. Matches `tokenizers` and `Tokenizer.encode` with the same `add_special_tokens`;
        the default, True, puts the BOS token in front, as Command-R's post-processor does (and as
        Hugging Face tokenizers do by default). Pass False for the bare text's ids."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = []
        for piece, is_added in self.split_on_added_tokens(text):
            if is_added:
                ids.append(self.vocab[piece])
                continue
            # tokens flagged normalized=True are looked for in the normalised text
            for sub, sub_added in self.split_on_added_tokens(nfc(piece), self._norm_pattern):
                ids.extend([self.vocab[sub]] if sub_added else self.encode_ordinary(sub))
        if add_special_tokens and self.bos_token is not None:
            ids.insert(0, self.vocab[self.bos_token])
        return ids

    # -- decoding --------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """ids -> text. Bytes that do not form valid UTF-8 become U+FFFD."""
        out = bytearray()
        for i in ids:
            i = int(i)
            tok = self.id_to_token.get(i)
            if tok is None:
                raise ValueError(f"token id {i} is not in the vocabulary (size {len(self.vocab)})")
            if skip_special_tokens and self.added.get(tok, {}).get("special"):
                continue
            out += token_to_bytes(tok)
        return out.decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _bos_from_post_processor(post: dict | None) -> str | None:
    """The token a TemplateProcessing post-processor puts before the sequence, if any."""
    if not post or post.get("type") != "TemplateProcessing":
        return None
    first = post["single"][0]
    return first["SpecialToken"]["id"] if "SpecialToken" in first else None
