"""Build minicohere's synthetic training corpus: short children's stories and chats.

Everything here is generated from a seeded random number generator and a small
hand-written grammar, so the corpus is the project's own (MIT) and nothing is
downloaded. The same seed always gives the same texts, byte for byte.

    python scripts/make_corpus.py                 # writes assets/corpus/{train,val,extra}.txt
    python scripts/make_corpus.py --seed 1 --n-train 2000 --out /tmp/corpus

From Python (``scripts/`` on sys.path):

    from make_corpus import build_corpus, build_chats
    train_texts, val_texts = build_corpus(seed=0)

Documents are separated by a blank line in the text files; a document never
contains a blank line itself (stories are one paragraph, chats use single newlines).

`extra.txt` (`build_extra`) is more training text from its own random stream: more stories
of the same grammar, stories that open "Once upon a time,", and the chats a new user tries
first (greetings, "What is your name?", "Tell me a story."). It is a separate file so that
train.txt and val.txt, and with them the tokenizer trained on train.txt's documents and the
validation split the model card measures, stay exactly as they were.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "assets" / "corpus"
MAX_SHIPPED_BYTES = 5_000_000  # bigger corpora are regenerated, not committed

# ----------------------------------------------------------------------------
# the world the stories happen in

NAMES = ["Mia", "Leo", "Ava", "Sam", "Nora", "Ben", "Lily", "Omar", "Zoe", "Max",
         "Ivy", "Finn", "Ruby", "Theo", "Luna", "Kai", "Ella", "Jack", "Maya", "Noah",
         "Rosa", "Eli", "Hana", "Tom", "Iris", "Amir", "Lucy", "Oscar", "Pia", "Ravi",
         "Sara", "Hugo", "Tara", "Yuki", "Dina", "Felix", "Greta", "Jonah", "Kira", "Milo"]
PRONOUN = {name: ("she" if i % 2 == 0 else "he") for i, name in enumerate(NAMES)}
ANIMALS = ["cat", "dog", "rabbit", "fox", "owl", "duck", "frog", "bear", "mouse", "horse",
           "goat", "turtle", "squirrel", "hedgehog", "puppy", "kitten", "pony", "robin",
           "sheep", "badger", "otter", "deer", "lamb", "parrot", "snail", "beetle"]
PLACES = ["the park", "the forest", "the beach", "the garden", "the farm", "the river",
          "the school", "the library", "the market", "the hill", "the lake", "the zoo",
          "the meadow", "the bakery", "the village", "the castle", "the harbour",
          "the playground", "the kitchen", "the attic", "the museum", "the orchard",
          "the train station", "the old bridge", "the big tree", "the pond"]
THINGS = ["ball", "kite", "book", "hat", "box", "shell", "key", "cake", "apple", "map",
          "boat", "drum", "bell", "cup", "lamp", "sock", "stone", "feather", "coin",
          "flower", "leaf", "crayon", "blanket", "basket", "whistle", "marble", "scarf",
          "teapot", "umbrella", "spoon", "letter", "ribbon", "star", "pencil", "jar"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white",
           "black", "brown", "silver", "golden"]
SIZES = ["little", "big", "tiny", "huge", "small", "round", "shiny", "soft", "old", "new"]
MOODS = ["happy", "sad", "brave", "sleepy", "curious", "proud", "worried", "excited",
         "calm", "grumpy", "shy", "silly", "kind", "tired", "surprised"]
TIMES = ["One morning", "One day", "Last summer", "On a rainy afternoon", "Early one morning",
         "On Sunday", "After lunch", "Before dinner", "One snowy evening", "On a windy day",
         "Late at night", "On Monday", "At sunrise", "One spring day"]
WEATHER = ["The sun was warm.", "It was raining softly.", "The wind was cold.",
           "Snow covered the ground.", "The sky was grey.", "The air smelled of flowers.",
           "Clouds raced across the sky.", "It was a quiet day."]
ACTIONS = ["played with", "looked for", "found", "lost", "painted", "carried", "shared",
           "fixed", "hid", "dropped", "cleaned", "counted", "wrapped", "threw"]
FEELING_REASONS = ["because the day was perfect", "because a friend was near",
                   "because it was time to go home", "because the wind was strong",
                   "because the sun came out", "because something was missing",
                   "because everyone was laughing", "because the road was long"]
ENDINGS = ["In the end, everyone was smiling.", "That night, {p} slept well.",
           "It was the best day of the year.", "{N} never forgot that day.",
           "From then on, they were best friends.", "And that is how the {t} came home.",
           "Then they all went home for dinner.", "{N} laughed and said thank you."]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "ten", "eleven", "twelve"]


# Invented names (pets, towns) built from syllables give the corpus an open-ended
# vocabulary: enough word pieces for a 4096-token BPE, and names a model must copy
# from context rather than memorise.
ONSETS = ["b", "br", "d", "dr", "f", "fl", "g", "gl", "h", "j", "k", "kr", "l", "m", "n", "p",
          "pl", "qu", "r", "s", "sh", "sk", "sn", "t", "th", "tr", "v", "w", "z", "ch"]
VOWELS = ["a", "e", "i", "o", "u", "oo", "ee", "ai", "ou", "y", "ie", "oa"]
CODAS = ["", "", "", "n", "m", "l", "r", "s", "x", "k", "th", "ng", "p", "b", "ck", "sh"]
ENDS = ["", "", "o", "a", "y", "ie", "el", "et", "kin", "wick", "ford", "ton", "ble", "bo"]


def invent_name(rng: random.Random) -> str:
    """A pronounceable made-up name such as 'Brimblet' or 'Shoutonkin'."""
    parts = [rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.randint(1, 2))]
    return ("".join(parts) + rng.choice(ENDS)).capitalize()


def name_pool(seed: int, n: int) -> list[str]:
    """`n` distinct invented names, the same for the same seed."""
    rng, names = random.Random(f"names-{seed}"), {}
    while len(names) < n:
        names.setdefault(invent_name(rng), None)
    return list(names)


PET_NAMES = name_pool(0, 2500)
TOWN_NAMES = name_pool(1, 800)


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _a(word: str) -> str:
    """'a' or 'an' in front of `word` (by its first letter, good enough for our words)."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("x", "s", "ch", "sh")) else "s")


def make_story(rng: random.Random) -> str:
    """One paragraph: a character, a friend, a place, a thing, a problem, an ending."""
    hero, friend = rng.sample(NAMES, 2)
    p = PRONOUN[hero]
    animal, place, place2 = rng.choice(ANIMALS), rng.choice(PLACES), rng.choice(PLACES)
    thing, colour, size = rng.choice(THINGS), rng.choice(COLOURS), rng.choice(SIZES)
    mood, mood2 = rng.sample(MOODS, 2)
    n = rng.randint(2, 12)
    pet, town = rng.choice(PET_NAMES), rng.choice(TOWN_NAMES)
    sentences = [
        rng.choice([
            f"{rng.choice(TIMES)}, {hero} went to {place} with {_a(size)} {animal}.",
            f"{rng.choice(TIMES)}, {hero} took {_a(size)} {animal} called {pet} to {place}.",
            f"{rng.choice(TIMES)}, {hero} and {_a(animal)} named {pet} visited {place} in {town}.",
        ]),
        rng.choice(WEATHER),
        rng.choice([
            f"{_cap(p)} {rng.choice(ACTIONS)} {_a(colour)} {thing}.",
            f"There {p} saw {n} {colour} {_plural(thing)} under a bench.",
            f"{hero} had {n} {_plural(thing)} in a bag, and one of them was {colour}.",
        ]),
        rng.choice([
            f"The {animal} felt {mood} {rng.choice(FEELING_REASONS)}.",
            f"{hero} felt {mood}, but the {animal} was {mood2}.",
            f"\"Look!\" said {hero}. \"The {thing} is {colour}!\"",
        ]),
        rng.choice([
            f"Then {friend} came from {place2} and asked, \"Can I help you?\"",
            f"Soon {friend} arrived and they looked for the {thing} together.",
            f"{friend} waved from {place2} and ran over to play.",
        ]),
        rng.choice([
            f"They counted {n} steps, then {n + rng.randint(1, 9)} more.",
            f"The {animal} jumped {NUMBER_WORDS[min(n, 12)]} times and everyone laughed.",
            f"It took {n} minutes to walk back to {place}.",
            f"At {rng.randint(1, 12)} o'clock they shared {n} biscuits.",
        ]),
        rng.choice(ENDINGS + [f"Everyone in {town} still talks about {pet}."]).format(p=p, N=hero, t=thing),
    ]
    # drop a middle sentence now and then so not every story has the same shape
    if rng.random() < 0.4:
        del sentences[rng.randint(1, 5)]
    return " ".join(sentences)


def make_chat(rng: random.Random) -> list[dict]:
    """A short user/assistant exchange (a list of {role, content} messages)."""
    kind = rng.randrange(5)
    name, animal, thing, colour = (rng.choice(NAMES), rng.choice(ANIMALS),
                                   rng.choice(THINGS), rng.choice(COLOURS))
    if kind == 0:  # small sums with digits, to exercise digit splitting
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        if rng.random() < 0.5:
            return [{"role": "user", "content": f"What is {a} plus {b}?"},
                    {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
        a, b = max(a, b), min(a, b)
        return [{"role": "user", "content": f"What is {a} minus {b}?"},
                {"role": "assistant", "content": f"{a} minus {b} is {a - b}."}]
    if kind == 1:  # recall a fact from the question
        return [{"role": "user", "content": f"{name} has {_a(colour)} {thing}. What colour is the {thing}?"},
                {"role": "assistant", "content": f"The {thing} is {colour}."}]
    if kind == 2 and rng.random() < 0.5:  # copy a name from the question
        pet = rng.choice(PET_NAMES)
        return [{"role": "user", "content": f"My {animal} is called {pet}. What is my {animal} called?"},
                {"role": "assistant", "content": f"Your {animal} is called {pet}."}]
    if kind == 2:  # a tiny story on request
        return [{"role": "user", "content": f"Tell me a short story about {_a(animal)}."},
                {"role": "assistant", "content": make_story(rng)}]
    if kind == 3:  # two turns
        place = rng.choice(PLACES)
        town = rng.choice(TOWN_NAMES)
        return [{"role": "user", "content": f"Where did {name} go today?"},
                {"role": "assistant", "content": f"{name} went to {place} in {town}."},
                {"role": "user", "content": "What did " + PRONOUN[name] + " take?"},
                {"role": "assistant", "content": f"{_cap(PRONOUN[name])} took {_a(colour)} {thing}."}]
    n = rng.randint(1, 9)
    return [{"role": "user", "content": f"Count to {n}, please."},
            {"role": "assistant", "content": ", ".join(str(i) for i in range(1, n + 1)) + "."}]


def chat_to_text(messages: list[dict]) -> str:
    """Plain-text form of a chat for the pretraining corpus ("User: ..." lines)."""
    label = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n".join(f"{label[m['role']]}: {m['content']}" for m in messages)


def build_chats(seed: int = 0, n: int = 1000) -> list[list[dict]]:
    """`n` chats as message lists, ready for `Tokenizer.apply_chat_template`."""
    rng = random.Random(f"chats-{seed}")
    return [make_chat(rng) for _ in range(n)]


def build_corpus(seed: int = 0, n_train: int = 9000, n_val: int = 500,
                 chat_fraction: float = 0.25) -> tuple[list[str], list[str]]:
    """Return (train_texts, val_texts): stories and plain-text chats, deterministic in `seed`.

    Validation documents come from the same generator after the training ones, so the
    two splits share the grammar but not (except by chance) the exact documents.
    """
    if n_train < 0 or n_val < 0:
        raise ValueError(f"n_train and n_val must be >= 0, got n_train={n_train}, n_val={n_val}")
    if not 0.0 <= chat_fraction <= 1.0:
        raise ValueError(f"chat_fraction must be in [0, 1], got {chat_fraction}")
    rng = random.Random(seed)
    texts = []
    for _ in range(n_train + n_val):
        if rng.random() < chat_fraction:
            texts.append(chat_to_text(make_chat(rng)))
        else:
            texts.append(make_story(rng))
    return texts[:n_train], texts[n_train:]


# ----------------------------------------------------------------------------
# extra.txt: what a new user types first

MODEL_NAME = "Tiny"
GREETINGS = ["Hello!", "Hi!", "Hello.", "Hi there!", "Hey!", "Good morning!", "Good evening!", "Hello there!"]
GREETING_REPLIES = [f"Hello! I am {MODEL_NAME}. Would you like to hear a story?",
                    "Hi! How can I help you today?",
                    f"Hello! I am {MODEL_NAME}, a small model. I can tell you a story.",
                    "Hello! What would you like to talk about?"]
NAME_QUESTIONS = ["What is your name?", "What's your name?", "Who are you?", "What are you?",
                  "Do you have a name?", "Tell me your name."]
NAME_REPLIES = [f"My name is {MODEL_NAME}. I am a small language model trained by minicohere.",
                f"I am {MODEL_NAME}, a small language model trained by minicohere.",
                f"My name is {MODEL_NAME}. I tell short stories and answer small questions."]
SMALL_TALK = [
    (["How are you?", "How are you today?", "How do you feel?"],
     ["I am fine, thank you! Would you like to hear a story?", "I am happy today. Thank you for asking!"]),
    (["What can you do?", "What do you know?", "Can you help me?"],
     ["I can tell short stories about children and animals, add and subtract small numbers, count, "
      "and answer simple questions.", "I can tell you a short story, count, or do a small sum."]),
    (["Thank you!", "Thanks!", "Thank you very much."], ["You are welcome!", "You are welcome. Have a nice day!"]),
    (["Goodbye!", "Bye!", "See you later."], ["Goodbye! Have a nice day.", "Bye! Come back for another story."]),
]
STORY_REQUESTS = ["Tell me a story.", "Tell me a story, please.", "Can you tell me a story?",
                  "Once upon a time...", "Tell me a bedtime story."]


def once_upon_a_time(story: str) -> str:
    """The same story opening with "Once upon a time," (every story's first sentence starts with a
    time phrase and a comma)."""
    return "Once upon a time," + story.split(",", 1)[1]


def make_first_contact_chat(rng: random.Random) -> list[dict]:
    """A chat that starts the way new users start: a greeting, the model's name, small talk, a story."""
    user = lambda text: {"role": "user", "content": text}  # noqa: E731
    bot = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    kind = rng.randrange(6)
    if kind == 0:
        return [user(rng.choice(GREETINGS)), bot(rng.choice(GREETING_REPLIES))]
    if kind == 1:
        question = rng.choice(NAME_QUESTIONS)
        if rng.random() < 0.5:
            question = rng.choice(GREETINGS) + " " + question
        return [user(question), bot(rng.choice(NAME_REPLIES))]
    if kind == 2:
        asks, replies = rng.choice(SMALL_TALK)
        return [user(rng.choice(asks)), bot(rng.choice(replies))]
    if kind == 3:  # the user introduces themselves, then checks the model listened
        name = rng.choice(NAMES + PET_NAMES[:200])
        return [user(f"{rng.choice(['Hello', 'Hi'])}, my name is {name}."),
                bot(f"Hello, {name}! Nice to meet you."),
                user("What is my name?"), bot(f"Your name is {name}.")]
    if kind == 4:
        story = make_story(rng)
        return [user(rng.choice(STORY_REQUESTS)), bot(once_upon_a_time(story) if rng.random() < 0.5 else story)]
    # a greeting, then one of the corpus's usual questions
    return [user(rng.choice(GREETINGS)), bot(rng.choice(GREETING_REPLIES))] + make_chat(rng)


def build_extra(seed: int = 0, n: int = 6000) -> list[str]:
    """`n` more training documents, from a random stream of their own (train.txt and val.txt do not
    move): 45% stories of the usual grammar, 20% stories that open "Once upon a time,", 35% chats,
    half of them greeting chats (hellos, the model's name, small talk, story requests)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"extra-{seed}")
    texts = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            texts.append(make_story(rng))
        elif r < 0.65:
            texts.append(once_upon_a_time(make_story(rng)))
        elif r < 0.825:
            texts.append(chat_to_text(make_first_contact_chat(rng)))
        else:
            texts.append(chat_to_text(make_chat(rng)))
    return texts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=9000)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--n-extra", type=int, default=6000, help="documents in extra.txt")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for train.txt and val.txt")
    args = ap.parse_args(argv)
    train, val = build_corpus(args.seed, args.n_train, args.n_val)
    extra = build_extra(args.seed, args.n_extra)
    blobs = {"train.txt": "\n\n".join(train) + "\n", "val.txt": "\n\n".join(val) + "\n",
             "extra.txt": "\n\n".join(extra) + "\n"}
    total = sum(len(b.encode("utf-8")) for b in blobs.values())
    print(f"{len(train)} train / {len(val)} val / {len(extra)} extra documents, {total / 1e6:.2f} MB, "
          f"{len(set(train))} distinct train documents")
    if total > MAX_SHIPPED_BYTES and args.out.resolve() == DEFAULT_OUT.resolve():
        print(f"not writing into {DEFAULT_OUT}: {total} bytes is over the {MAX_SHIPPED_BYTES} "
              "byte limit for shipped assets; pass --out to write elsewhere")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():
        (args.out / name).write_text(blob, encoding="utf-8")
        print("wrote", args.out / name)


if __name__ == "__main__":
    main()
