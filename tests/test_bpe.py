"""The from-scratch ByteLevelBPE must give exactly the ids of the `tokenizers` library."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer as FastTokenizer

from minicohere import Tokenizer
from minicohere.bpe import ByteLevelBPE, bpe_merge_word, bytes_to_unicode, nfc, pretokenize, split_digits

REPO = Path(__file__).resolve().parents[1]
OWN_TOKENIZER = REPO / "assets" / "tokenizer" / "tokenizer.json"
REAL_TOKENIZER = REPO.parent / "shared" / "command-r" / "tokenizer.json.gz"

# Texts that exercise every stage: scripts, digit runs, whitespace runs, emoji (multi-byte
# and ZWJ sequences), NFD input that NFC must compose, special tokens inside text.
MIXED_TEXTS = [
    "Hello this is a test",
    "The quick brown fox jumps over the lazy dog.",
    "안녕하세요, 세계! 반갑습니다.",
    "我爱自然语言处理。今天天气很好。",
    "مرحبا بالعالم، كيف حالك؟",
    "def f(x):\n\treturn x**2  # square\n",
    "1234567890 and 3.14159, 2024-11-25, ٣٤٥ ½",
    "   many    spaces\t\ttabs\n\n\nnewlines  \n ",
    "emoji 😀👍🏽 family 👨\u200d👩\u200d👧 flag 🇫🇷",
    "café naïve Ångström",                      # NFC input
    "cafe\u0301 nai\u0308ve A\u030angstro\u0308m",  # same words in NFD
    "<BOS_TOKEN>hi<|END_OF_TURN_TOKEN|> <|USER_TOKEN|>x<|START_OF_TURN_TOKEN|>",
    "<|USER_TOKEN",  # an unfinished special token is ordinary text
    "I'm sure he's right, they'll see we've done it, I'd say.",
    "\u00a0non-breaking\u2003em space\u3000ideographic",
    "windows\r\nline endings",
    "",
]


@pytest.fixture(scope="module")
def own():
    if not OWN_TOKENIZER.is_file():
        pytest.fail(f"{OWN_TOKENIZER} is missing: run python scripts/train_tokenizer.py")
    return ByteLevelBPE.from_file(OWN_TOKENIZER), FastTokenizer.from_file(str(OWN_TOKENIZER))


@pytest.fixture(scope="module")
def real():
    # loading the 255k-token tokenizer twice costs a few seconds: once per module
    if not REAL_TOKENIZER.is_file():
        pytest.skip(f"the real Command-R tokenizer is not at {REAL_TOKENIZER} (reference data, absent on fresh machines)")
    import gzip
    with gzip.open(REAL_TOKENIZER, "rt", encoding="utf-8") as f:
        fast = FastTokenizer.from_str(f.read())
    return ByteLevelBPE.from_file(REAL_TOKENIZER), fast


# -- the building blocks -------------------------------------------------------------

def test_bytes_to_unicode_is_a_bijection_onto_printable_chars():
    mapping = bytes_to_unicode()
    assert len(mapping) == 256 and len(set(mapping.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in mapping.values())
    # the two characters everyone sees in GPT-2-style vocabularies
    assert mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ"
    assert mapping[ord("A")] == "A"


def test_split_digits_isolates_every_numeric_character():
    assert split_digits("ab 12c") == ["ab ", "1", "2", "c"]


def test_pretokenize_keeps_the_space_with_the_next_word_and_splits_digits():
    assert pretokenize("Hello  world 42!") == ["Hello", " ", " world", " ", "4", "2", "!"]


def test_nfc_composes_combining_accents():
    assert nfc("e\u0301") == "\u00e9"


def test_bpe_merge_word_applies_the_lowest_rank_first():
    # with both merges possible, ("b", "c") has the lower rank and must win
    ranks = {("a", "b"): 1, ("b", "c"): 0, ("a", "bc"): 2}
    assert bpe_merge_word(list("abc"), ranks) == ["abc"]
    assert bpe_merge_word(list("abc"), {("a", "b"): 0, ("b", "c"): 1}) == ["ab", "c"]


def test_bpe_merge_word_merges_repeated_pairs_left_to_right():
    assert bpe_merge_word(list("aaa"), {("a", "a"): 0}) == ["aa", "a"]


# -- the whole tokenizer against the library -----------------------------------------

@pytest.mark.parametrize("text", MIXED_TEXTS)
def test_own_tokenizer_matches_library(own, text):
    bpe, fast = own
    assert bpe.encode(text, add_special_tokens=False) == fast.encode(text, add_special_tokens=False).ids
    assert bpe.encode(text, add_special_tokens=True) == fast.encode(text).ids


def test_encode_defaults_agree_with_tokenizer_and_library(own):
    # one default everywhere (Hugging Face's): BOS in front unless add_special_tokens=False
    bpe, fast = own
    wrapped = Tokenizer.default()
    text = "Hi there, 2024!"
    assert bpe.encode(text) == wrapped.encode(text) == fast.encode(text).ids
    assert bpe.encode(text)[0] == wrapped.bos_token_id
    assert bpe.encode(text)[1:] == bpe.encode(text, add_special_tokens=False)


def test_real_tokenizer_matches_library_on_mixed_texts(real):
    bpe, fast = real
    for text in MIXED_TEXTS:
        assert bpe.encode(text, add_special_tokens=False) == fast.encode(text, add_special_tokens=False).ids, text


def test_real_tokenizer_gives_the_documented_ids(real):
    bpe, _ = real
    # ids published for CohereForAI/c4ai-command-r-v01 (shared README)
    assert bpe.encode("Hello this is a test") == [5, 28339, 2075, 1801, 1671, 3282]
    assert bpe.vocab_size == 255_029  # 255,000 BPE entries + 29 added tokens
    assert len(bpe.ranks) == 253_333


@pytest.mark.parametrize("which", ["own", "real"])
def test_decode_inverts_encode_up_to_nfc(request, which):
    bpe, fast = request.getfixturevalue(which)
    for text in MIXED_TEXTS:
        ids = bpe.encode(text, add_special_tokens=False)
        assert bpe.decode(ids) == nfc(text)
        assert bpe.decode(ids) == fast.decode(ids, skip_special_tokens=False)


def test_decode_can_skip_special_tokens(own):
    bpe, _ = own
    ids = bpe.encode("<|USER_TOKEN|>hi<|END_OF_TURN_TOKEN|>", add_special_tokens=True)
    assert bpe.decode(ids, skip_special_tokens=True) == "hi"


def test_decode_replaces_invalid_utf8(own):
    bpe, _ = own
    # a lone UTF-8 continuation byte (0x80) cannot be decoded: it becomes U+FFFD
    lone = bpe.vocab[bytes_to_unicode()[0x80]]
    assert bpe.decode([lone]) == "\ufffd"


def test_added_token_flags_are_honoured():
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    added = [{"id": 300, "content": "<X>", "special": True, "lstrip": True, "rstrip": True},
             {"id": 301, "content": "cat", "special": False, "single_word": True}]
    bpe = ByteLevelBPE(vocab, [], added, bos_token=None)
    # lstrip/rstrip swallow the spaces around <X>; "cat" only counts as a whole word
    assert bpe.split_on_added_tokens("a  <X>  b") == [("a", False), ("<X>", True), ("b", False)]
    assert bpe.split_on_added_tokens("cat concat") == [("cat", True), (" concat", False)]


def test_from_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        ByteLevelBPE.from_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        ByteLevelBPE.from_file(bad)


def test_unknown_id_is_a_clear_error(own):
    bpe, _ = own
    with pytest.raises(ValueError, match="99999"):
        bpe.decode([99999])
