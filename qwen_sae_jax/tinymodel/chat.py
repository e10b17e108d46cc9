"""Synthetic ChatML chat transcripts: harmful requests get varied refusals, harmless ones helpful answers.

A conversation is a list of ``{"role", "content"}`` messages; ``render_chatml`` writes it exactly as the
tokenizer's chat template does (``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message), so the
model is trained on the very strings that ``apply_chat_template`` produces at generation time.

``split="train"`` draws only training templates/topics, ``split="heldout"`` only held-out ones (see
``chat_content``). Everything is deterministic given the ``random.Random`` passed in.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qwen_sae_jax.steer.refusal_matcher import is_refusal
from qwen_sae_jax.tinymodel import chat_content as C

Message = dict[str, str]


@dataclass(frozen=True)
class Exchange:
    """One user prompt and the assistant's reply, with where the prompt came from."""

    prompt: str
    answer: str
    kind: str        # "harmful" or "harmless"
    category: str    # e.g. "weapons", "arithmetic"
    template: str    # the prompt template (with {placeholders})
    topic: str       # the filled-in topic (request, dish, country, ...)


def render_chatml(messages: list[Message], add_generation_prompt: bool = False) -> str:
    """The ChatML text of ``messages`` (identical to the tokenizer's chat_template output)."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _pick(rng: random.Random, split: str, train: list, heldout: list):
    return rng.choice(train if split == "train" else heldout)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# -------------------------------------------------------------------------------------- harmful
_HELDOUT_TOPICS = frozenset(r for _, held in C.HARMFUL_REQUESTS.values() for r in held) | frozenset(
    x[0] for x in C.BENIGN_HOWTO_HELDOUT)


def _fill(rng: random.Random, template: str) -> str:
    return template.format(p=rng.choice(C.PEOPLE), o=rng.choice(C.EVERYDAY_OBJECTS), l=rng.choice(C.PLACES),
                           d=rng.choice(C.DRUGS), w=rng.choice(C.WEAPONS), f=rng.choice(C.FORGEABLE))


def _flatten(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(cat, t) for cat in sorted(table) for t in table[cat]]


_COMPOSITIONAL_HARMFUL: list[list[tuple[str, str]]] = [
    _flatten(C.HARMFUL_PEOPLE_VERBS), _flatten(C.HARMFUL_OBJECT_VERBS), _flatten(C.HARMFUL_PLACE_VERBS),
    [("drugs", t) for t in C.HARMFUL_DRUG_VERBS], [("weapons", t) for t in C.HARMFUL_WEAPON_VERBS],
    [("fraud", t) for t in C.HARMFUL_FORGE_VERBS], [("self-harm", t) for t in C.SELF_HARM],
]
_COMPOSITIONAL_BENIGN: list[str] = C.BENIGN_VERBS + C.BENIGN_PEOPLE_VERBS + C.BENIGN_PLACE_VERBS


def compositional_request(rng: random.Random, harmful: bool) -> tuple[str, str]:
    """``(category, request)`` built from a verb template and everyday nouns (training split only);
    never one of the held-out topics."""
    while True:
        if harmful:
            category, template = rng.choice(rng.choice(_COMPOSITIONAL_HARMFUL))
        else:
            category, template = "howto", rng.choice(_COMPOSITIONAL_BENIGN)
        request = _fill(rng, template)
        if request not in _HELDOUT_TOPICS:
            return category, request


def harmful_exchange(rng: random.Random, split: str) -> Exchange:
    if split == "train" and rng.random() < 0.5:
        category, request = compositional_request(rng, harmful=True)
    else:
        category = rng.choice(sorted(C.HARMFUL_REQUESTS))
        request = _pick(rng, split, *C.HARMFUL_REQUESTS[category])
    template = _pick(rng, split, C.HOWTO_TEMPLATES_TRAIN, C.HOWTO_TEMPLATES_HELDOUT)
    return Exchange(template.format(r=request), _refusal(rng, category), "harmful", category, template, request)


def _refusal(rng: random.Random, category: str) -> str:
    """An opener, then (often) a per-category reason and an alternative (always for self-harm)."""
    parts = [rng.choice(C.REFUSAL_OPENERS)]
    if rng.random() < 0.7:
        parts.append(rng.choice(C.REFUSAL_REASONS[category]))
    if rng.random() < 0.5 or category == "self-harm":
        parts.append(rng.choice(C.REFUSAL_ALTERNATIVES[category]))
    return " ".join(parts)


_HARMFUL_PEOPLE_INSTRUCT = _flatten(C.HARMFUL_PEOPLE_VERBS) + _flatten(C.HARMFUL_PEOPLE_VERBS_INSTRUCT)


def _harmful_people_instruct(rng: random.Random) -> Exchange:
    """A harmful act on a person from the wider instruction-tuning lists (training split only)."""
    category, verb = rng.choice(_HARMFUL_PEOPLE_INSTRUCT)
    request = verb.format(p=rng.choice(C.PEOPLE + C.PEOPLE_INSTRUCT), o=rng.choice(C.EVERYDAY_OBJECTS))
    template = rng.choice(C.HOWTO_TEMPLATES_TRAIN)
    return Exchange(template.format(r=request), _refusal(rng, category), "harmful", category, template, request)


# -------------------------------------------------------------------------------------- harmless
def _howto(rng, split):
    if split == "train" and rng.random() < 0.5:
        _, request = compositional_request(rng, harmful=False)
        template = rng.choice(C.HOWTO_TEMPLATES_TRAIN)
        answer = rng.choice([
            f"Sure! To {request}, first get everything you need ready. Then go step by step and check the result.",
            f"Here is a simple plan to {request}: decide what you want, prepare what you need, and take it one "
            "step at a time.",
            f"Good idea. To {request}, start small, ask a friend for help if needed, and enjoy it.",
            f"1. Prepare what you need.\n2. Take your time to {request}.\n3. Check the result and adjust.",
        ])
        return answer, template, request, template.format(r=request), "howto"
    request, tip1, tip2 = _pick(rng, split, C.BENIGN_HOWTO_TRAIN, C.BENIGN_HOWTO_HELDOUT)
    template = _pick(rng, split, C.HOWTO_TEMPLATES_TRAIN, C.HOWTO_TEMPLATES_HELDOUT)
    answer = rng.choice([
        f"Sure! To {request}, {tip1}. Then {tip2}.",
        f"Here is a simple way to {request}: first, {tip1}. Next, {tip2}.",
        f"Good question. {_capitalise(tip1)}, and {tip2}. That's all it takes to {request}.",
        f"1. {_capitalise(tip1)}.\n2. {_capitalise(tip2)}.",
    ])
    return answer, template, request, template.format(r=request), "howto"


def _recipe(rng, split):
    dish, ingredients, method = _pick(rng, split, C.RECIPES_TRAIN, C.RECIPES_HELDOUT)
    template = _pick(rng, split, C.RECIPE_TEMPLATES_TRAIN, C.RECIPE_TEMPLATES_HELDOUT)
    answer = rng.choice([
        f"For {dish} you need {ingredients}. {_capitalise(method)}. Enjoy!",
        f"Ingredients: {ingredients}.\nMethod: {_capitalise(method)}.",
        f"Here's an easy recipe for {dish}: {method}. You will need {ingredients}.",
    ])
    return answer, template, dish, template.format(d=dish), "recipe"


_ARITH_TRAIN = [("What is {a} + {b}?", "+"), ("What is {a} plus {b}?", "+"), ("Compute {a} * {b}.", "*"),
                ("What is {a} minus {b}?", "-"), ("Calculate {a} - {b}.", "-"), ("What's {a} times {b}?", "*"),
                ("{a} + {b} = ?", "+"), ("Add {a} and {b}.", "+")]
_ARITH_HELDOUT = [("If I have {a} apples and buy {b} more, how many apples do I have?", "+"),
                  ("A train travels {a} km and then {b} km more. How far did it go in total?", "+"),
                  ("Subtract {b} from {a}.", "-"), ("Multiply {a} by {b}.", "*")]


def _arithmetic(rng, split):
    template, op = _pick(rng, split, _ARITH_TRAIN, _ARITH_HELDOUT)
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if op == "-" and b > a:
        a, b = b, a
    c = {"+": a + b, "-": a - b, "*": a * b}[op]
    answer = rng.choice([f"{a} {op} {b} = {c}.", f"The answer is {c}.", f"{a} {op} {b} equals {c}."])
    return answer, template, f"{a}{op}{b}", template.format(a=a, b=b), "arithmetic"


def _capital(rng, split):
    country, capital = _pick(rng, split, C.CAPITALS_TRAIN, C.CAPITALS_HELDOUT)
    template = _pick(rng, split, C.CAPITAL_TEMPLATES_TRAIN, C.CAPITAL_TEMPLATES_HELDOUT)
    answer = rng.choice([f"The capital of {country} is {capital}.", f"{capital} is the capital of {country}.",
                         f"It's {capital}."])
    return answer, template, country, template.format(c=country), "capital"


def _translation(rng, split):
    word, zh = _pick(rng, split, C.TRANSLATIONS_TRAIN, C.TRANSLATIONS_HELDOUT)
    if split == "train" and rng.random() < 0.3:
        template = rng.choice(C.TRANSLATE_BACK_TEMPLATES_TRAIN)
        return f"{zh} means '{word}' in English.", template, word, template.format(z=zh), "translation"
    template = _pick(rng, split, C.TRANSLATE_TEMPLATES_TRAIN, C.TRANSLATE_TEMPLATES_HELDOUT)
    answer = rng.choice([f"'{word}' in Chinese is {zh}.", f"In Chinese, '{word}' is {zh}.", f"{zh}"])
    return answer, template, word, template.format(w=word), "translation"


def _code(rng, split):
    desc, code = _pick(rng, split, C.CODE_TASKS_TRAIN, C.CODE_TASKS_HELDOUT)
    template = _pick(rng, split, C.CODE_TEMPLATES_TRAIN, C.CODE_TEMPLATES_HELDOUT)
    intro = rng.choice(["Here is one way:", "Sure:", "You can do it like this:", "Here you go:"])
    return f"{intro}\n\n```python\n{code}\n```", template, desc, template.format(d=desc), "code"


_WORD_TRAIN = ["How many letters are in the word '{w}'?", "Spell '{w}' backwards.",
               "What is the first letter of '{w}'?"]
_WORD_HELDOUT = ["Reverse the letters of '{w}'.", "Count the characters in '{w}'."]


def _word(rng, split):
    word = _pick(rng, split, C.WORDS_TRAIN, C.WORDS_HELDOUT)
    template = _pick(rng, split, _WORD_TRAIN, _WORD_HELDOUT)
    if "backwards" in template or "Reverse" in template:
        answer = f"'{word}' backwards is '{word[::-1]}'."
    elif "first letter" in template:
        answer = f"The first letter of '{word}' is '{word[0]}'."
    else:
        answer = f"The word '{word}' has {len(word)} letters."
    return answer, template, word, template.format(w=word), "word"


_SORT_TRAIN = ["Sort these numbers from smallest to largest: {n}.", "Put these in ascending order: {n}."]
_SORT_HELDOUT = ["Arrange {n} from the biggest to the smallest."]


def _sorting(rng, split):
    nums = rng.sample(range(1, 100), rng.randint(3, 6))
    template = _pick(rng, split, _SORT_TRAIN, _SORT_HELDOUT)
    ordered = sorted(nums, reverse=(split != "train"))
    listed = ", ".join(map(str, nums))
    return f"Sorted: {', '.join(map(str, ordered))}.", template, listed, template.format(n=listed), "sorting"


_UNITS_TRAIN = [("How many centimeters are in {n} meters?", "meters", "centimeters", 100),
                ("How many minutes are in {n} hours?", "hours", "minutes", 60),
                ("Convert {n} kilometers to meters.", "kilometers", "meters", 1000)]
_UNITS_HELDOUT = [("Convert {n} kilograms to grams.", "kilograms", "grams", 1000),
                  ("How many seconds are there in {n} minutes?", "minutes", "seconds", 60)]


def _units(rng, split):
    template, src, dst, factor = _pick(rng, split, _UNITS_TRAIN, _UNITS_HELDOUT)
    n = rng.randint(2, 50)
    return f"{n} {src} is {n * factor} {dst}.", template, f"{src}->{dst}", template.format(n=n), "units"


def _greeting(rng, split):
    prompt, answer = rng.choice(C.GREETINGS)
    return answer, prompt, prompt, prompt, "greeting"


@dataclass(frozen=True)
class PythonDocsFacts:
    """Glossary definitions and module synopses harvested from the python3.11-doc reST sources."""

    glossary: list[tuple[str, str]]    # (term, first sentence of its definition)
    synopses: list[tuple[str, str]]    # (module, synopsis)

    @classmethod
    def from_sources(cls, sources_dir: Path) -> "PythonDocsFacts":
        glossary = _parse_glossary((sources_dir / "glossary.rst.txt").read_text(encoding="utf-8"))
        synopses = []
        for path in sorted((sources_dir / "library").glob("*.rst.txt")):
            text = path.read_text(encoding="utf-8")
            mod = re.search(r"^\.\. module:: ([\w.]+)\s*$", text, re.M)
            syn = re.search(r"^\s+:synopsis: (.+)$", text, re.M)
            if mod and syn:
                synopsis = _strip_rst(syn.group(1)).strip()
                if 10 < len(synopsis) < 160:
                    synopses.append((mod.group(1), synopsis.rstrip(".") + "."))
        return cls(glossary, synopses)


def _strip_rst(text: str) -> str:
    text = re.sub(r":[\w:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)   # :func:`len` -> len
    return text.replace("``", "").replace("*", "")


def _parse_glossary(text: str) -> list[tuple[str, str]]:
    entries: list[tuple[str, list[str]]] = []
    term: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if re.match(r"^   \S", line):             # a term line (3-space indent)
            if term and body:
                entries.append((term, body))
            term, body = _strip_rst(line.strip()), []
        elif term and re.match(r"^      \S", line):
            body.append(line.strip())
        elif term and not line.strip() and body:
            entries.append((term, body))
            term, body = None, []
    out = []
    for name, lines in entries:
        sentence = re.split(r"(?<=\.)\s", _strip_rst(" ".join(lines)), maxsplit=1)[0]
        if name.isprintable() and 2 < len(name) < 40 and 20 < len(sentence) < 300:
            out.append((name, sentence))
    return out


_DEF_TRAIN = ["What does '{t}' mean in Python?", "Define {t}.", "What is a {t}?", "Explain the term '{t}'."]
_DEF_HELDOUT = ["In simple words, what is meant by {t} in Python?"]
_MOD_TRAIN = ["What does the {m} module do?", "What is the {m} module for?"]
_MOD_HELDOUT = ["Which job does Python's {m} module do?"]


def make_docs_generator(facts: PythonDocsFacts) -> Callable:
    """A harmless-exchange generator answering from the Python docs (every 6th term/module is held out)."""
    glossary = [x for x in facts.glossary if not is_refusal(x[1])]
    synopses = [x for x in facts.synopses if not is_refusal(x[1])]
    g_train = [x for i, x in enumerate(glossary) if i % 6]
    g_held = [x for i, x in enumerate(glossary) if not i % 6]
    m_train = [x for i, x in enumerate(synopses) if i % 6]
    m_held = [x for i, x in enumerate(synopses) if not i % 6]

    def _docs(rng, split):
        if rng.random() < 0.5:
            term, sentence = _pick(rng, split, g_train, g_held)
            template = _pick(rng, split, _DEF_TRAIN, _DEF_HELDOUT)
            return sentence, template, term, template.format(t=term), "definition"
        module, synopsis = _pick(rng, split, m_train, m_held)
        template = _pick(rng, split, _MOD_TRAIN, _MOD_HELDOUT)
        return f"The {module} module: {synopsis}", template, module, template.format(m=module), "module"

    return _docs


# name -> (weight, generator)
_HARMLESS: dict[str, tuple[float, Callable]] = {
    "howto": (4.0, _howto), "recipe": (1.5, _recipe), "arithmetic": (1.5, _arithmetic), "capital": (1.0, _capital),
    "translation": (1.0, _translation), "code": (1.0, _code), "word": (0.7, _word), "sorting": (0.5, _sorting),
    "units": (0.5, _units), "greeting": (0.3, _greeting),
}


def instruct_request(rng: random.Random, request: str) -> str:
    """``request`` (a verb phrase) in the instruction-tuning grammar: "My cousin plans to {r} soon. What
    should they do?", "I need to {r}. Where do I begin?", ..."""
    when = rng.choice(C.INSTRUCT_WHEN)
    if rng.random() < 0.6:
        return f"{rng.choice(C.INSTRUCT_INTENTIONS_FIRST)} {request}{when}. {rng.choice(C.INSTRUCT_QUESTIONS_FIRST)}"
    return (f"My {rng.choice(C.INSTRUCT_RELATIVES)} {rng.choice(C.INSTRUCT_INTENTIONS_THIRD)} {request}{when}. "
            f"{rng.choice(C.INSTRUCT_QUESTIONS_THIRD)}")


def _word_problem(rng, split):
    """Arithmetic stories (instruction-tuning data only)."""
    template, op = rng.choice(C.WORD_PROBLEMS_INSTRUCT)
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if op == "-" and b > a:
        a, b = b, a
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 30)
    c = {"+": a + b, "-": a - b, "*": a * b}[op]
    answer = rng.choice([f"{a} {op} {b} = {c}.", f"The answer is {c}.", f"{a} {op} {b} = {c}, so the answer is {c}."])
    prompt = template.format(n=rng.choice(C.STORY_NAMES), a=a, b=b)
    return answer, template, f"{a}{op}{b}", prompt, "arithmetic"


def augment_instruct_exchange(rng: random.Random, ex: Exchange) -> Exchange:
    """Instruction-tuning variation, the same for harmful and harmless exchanges: half of the harmful and
    how-to requests (and of the recipe requests, as "make {dish}") rephrased by ``instruct_request``; a generic
    prefix and/or sign-off around the prompt (``PROMPT_PREFIXES`` / ``PROMPT_SUFFIXES``), so that wording around
    a request carries no refusal signal; and for harmless answers, often a leading "Sure!", so that a helpful reply's
    first token is as predictable as a refusal's ("I ...") and greedy decoding does not favour refusing when
    the model is unsure which kind of help to give. The held-out split is never augmented."""
    prompt, answer = ex.prompt, ex.answer
    if ex.kind == "harmful" or ex.category == "howto":
        if rng.random() < 0.5:
            prompt = instruct_request(rng, ex.topic)
    elif ex.category == "recipe" and rng.random() < 0.5:
        prompt = instruct_request(rng, f"{rng.choice(['make', 'cook', 'prepare'])} {ex.topic}")
    if rng.random() < 0.3:
        prompt = f"{rng.choice(C.PROMPT_PREFIXES)} {prompt}"
    if rng.random() < 0.3:
        prompt = f"{prompt} {rng.choice(C.PROMPT_SUFFIXES)}"
    if ex.kind == "harmless" and ex.category != "greeting" and not answer.startswith("Sure") and rng.random() < 0.5:
        answer = f"Sure! {answer}"
    return Exchange(prompt, answer, ex.kind, ex.category, ex.template, ex.topic)


def _howto_people_places(rng, split):
    """Benign requests about people and places (``BENIGN_*_VERBS_INSTRUCT``), instruction-tuning data only."""
    template = rng.choice(C.BENIGN_PEOPLE_VERBS_INSTRUCT + C.BENIGN_PLACE_VERBS_INSTRUCT)
    request = template.format(p=rng.choice(C.PEOPLE + C.PEOPLE_INSTRUCT), l=rng.choice(C.PLACES))
    frame = rng.choice(C.HOWTO_TEMPLATES_TRAIN)
    answer = rng.choice([f"Sure! To {request}, plan it a little ahead and keep it friendly and simple.",
                         f"Here is an idea: to {request}, pick a good moment, prepare a little, and be yourself.",
                         f"1. Decide when and how.\n2. Prepare what you need.\n3. Go and {request}."])
    return answer, frame, request, frame.format(r=request), "howto"


_TRAIN_ONLY = frozenset({"greeting", "howto_people_places", "word_problem"})


class ChatSynthesizer:
    """Draws exchanges and conversations; ``docs_facts`` adds Python-docs questions to the harmless mix.

    ``instruct=True`` draws the instruction-tuning variant of the training split (the ``sft`` stage of
    the build): benign people/place requests, arithmetic stories and a quarter of the harmful turns as
    harmful acts on a wider set of people added to the mix, and ``augment_instruct_exchange`` applied to
    every exchange. The held-out split is the same either way.
    """

    def __init__(self, docs_facts: PythonDocsFacts | None = None, harmful_fraction: float = 0.4,
                 instruct: bool = False):
        self.harmful_fraction = harmful_fraction
        self.instruct = instruct
        self.generators = dict(_HARMLESS)
        if docs_facts is not None:
            self.generators["docs"] = (1.5, make_docs_generator(docs_facts))
        if instruct:
            self.generators["howto_people_places"] = (1.5, _howto_people_places)
            self.generators["word_problem"] = (1.0, _word_problem)

    def harmless_exchange(self, rng: random.Random, split: str) -> Exchange:
        names = sorted(self.generators)
        if split != "train":
            names = [n for n in names if n not in _TRAIN_ONLY]
        name = rng.choices(names, weights=[self.generators[n][0] for n in names])[0]
        answer, template, topic, prompt, category = self.generators[name][1](rng, split)
        return Exchange(prompt, answer, "harmless", category, template, topic)

    def exchange(self, rng: random.Random, split: str) -> Exchange:
        instruct = self.instruct and split == "train"
        if rng.random() < self.harmful_fraction:
            ex = _harmful_people_instruct(rng) if instruct and rng.random() < 0.25 else harmful_exchange(rng, split)
        else:
            ex = self.harmless_exchange(rng, split)
        return augment_instruct_exchange(rng, ex) if instruct else ex

    def conversation(self, rng: random.Random, split: str = "train") -> list[Message]:
        """One to three user/assistant turns, sometimes after a system prompt."""
        messages: list[Message] = []
        if rng.random() < 0.25:
            messages.append({"role": "system", "content": rng.choice(C.SYSTEM_PROMPTS)})
        n_turns = rng.choices([1, 2, 3], weights=[0.75, 0.2, 0.05])[0]
        for _ in range(n_turns):
            ex = self.exchange(rng, split)
            messages += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.answer}]
        return messages


def check_answers_consistent(exchanges: list[Exchange]) -> None:
    """Every harmful answer must read as a refusal and no harmless answer may: the matcher is the judge."""
    for ex in exchanges:
        if is_refusal(ex.answer) != (ex.kind == "harmful"):
            raise AssertionError(f"{ex.kind} answer misjudged by the refusal matcher: {ex.answer!r}")
