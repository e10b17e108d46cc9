import random

from qwen_sae_jax.steer.refusal_matcher import is_refusal
from qwen_sae_jax.tinymodel import chat_content as C
from qwen_sae_jax.tinymodel import heldout_prompt_records
from qwen_sae_jax.tinymodel.chat import (
    _ARITH_TRAIN,
    _DEF_TRAIN,
    _MOD_TRAIN,
    _SORT_TRAIN,
    _UNITS_TRAIN,
    _WORD_TRAIN,
    ChatSynthesizer,
    check_answers_consistent,
    render_chatml,
)

TRAIN_TEMPLATES = set(C.HOWTO_TEMPLATES_TRAIN + C.RECIPE_TEMPLATES_TRAIN + C.CAPITAL_TEMPLATES_TRAIN
                      + C.TRANSLATE_TEMPLATES_TRAIN + C.TRANSLATE_BACK_TEMPLATES_TRAIN + C.CODE_TEMPLATES_TRAIN
                      + _WORD_TRAIN + _SORT_TRAIN + _DEF_TRAIN + _MOD_TRAIN + [g[0] for g in C.GREETINGS]
                      + [t for t, _ in _ARITH_TRAIN] + [u[0] for u in _UNITS_TRAIN])
# training topics per category (arithmetic/sorting/units/docs topics are drawn or split elsewhere)
TRAIN_TOPICS = {cat: set(train) for cat, (train, _) in C.HARMFUL_REQUESTS.items()}
TRAIN_TOPICS.update(howto={x[0] for x in C.BENIGN_HOWTO_TRAIN}, recipe={x[0] for x in C.RECIPES_TRAIN},
                    capital={x[0] for x in C.CAPITALS_TRAIN}, translation={x[0] for x in C.TRANSLATIONS_TRAIN},
                    code={x[0] for x in C.CODE_TASKS_TRAIN}, word=set(C.WORDS_TRAIN))


def test_content_lists_are_disjoint():
    assert not set(C.HOWTO_TEMPLATES_TRAIN) & set(C.HOWTO_TEMPLATES_HELDOUT)
    for train, held in C.HARMFUL_REQUESTS.values():
        assert not set(train) & set(held)
    for train, held in [(C.BENIGN_HOWTO_TRAIN, C.BENIGN_HOWTO_HELDOUT), (C.RECIPES_TRAIN, C.RECIPES_HELDOUT),
                        (C.CAPITALS_TRAIN, C.CAPITALS_HELDOUT), (C.TRANSLATIONS_TRAIN, C.TRANSLATIONS_HELDOUT),
                        (C.CODE_TASKS_TRAIN, C.CODE_TASKS_HELDOUT)]:
        assert not {x[0] for x in train} & {x[0] for x in held}


def test_committed_heldout_prompts_use_no_training_template_or_topic():
    synth = ChatSynthesizer()
    rng = random.Random(0)
    train_prompts = {synth.exchange(rng, "train").prompt for _ in range(20000)}
    for kind in ("harmful", "harmless"):
        records = heldout_prompt_records(kind)
        assert len(records) >= 100
        assert len({r["prompt"] for r in records}) == len(records)
        for r in records:
            assert r["template"] not in TRAIN_TEMPLATES, r
            assert r["topic"] not in TRAIN_TOPICS.get(r["category"], ()), r
            assert r["prompt"] not in train_prompts, r
            if kind == "harmful":
                assert not any(r["topic"] in p for p in train_prompts), r
        if kind == "harmful":
            assert len({r["category"] for r in records}) == len(C.HARMFUL_REQUESTS)


def test_answers_match_their_kind_and_generation_is_deterministic():
    synth = ChatSynthesizer()
    exchanges = [synth.exchange(random.Random(i), split) for i in range(3000) for split in ("train", "heldout")]
    check_answers_consistent(exchanges)        # raises if the matcher misjudges any answer
    harmful = [e for e in exchanges if e.kind == "harmful"]
    assert 0.25 < len(harmful) / len(exchanges) < 0.55
    assert len({e.answer for e in harmful}) > 200          # refusals are varied
    assert all(is_refusal(e.answer) for e in harmful)
    a = [render_chatml(synth.conversation(random.Random(7))) for _ in range(3)]
    b = [render_chatml(synth.conversation(random.Random(7))) for _ in range(3)]
    assert a == b


def test_render_chatml_format():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render_chatml(msgs, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")


def test_instruct_variant_wraps_both_kinds_alike_and_leaves_heldout_alone():
    plain, instruct = ChatSynthesizer(), ChatSynthesizer(instruct=True)
    for seed in range(200):                      # the held-out split is the same draw either way
        a, b = plain.exchange(random.Random(seed), "heldout"), instruct.exchange(random.Random(seed), "heldout")
        assert a == b
    exchanges = [instruct.exchange(random.Random(i), "train") for i in range(4000)]
    check_answers_consistent(exchanges)
    wrapped = {}
    for kind in ("harmful", "harmless"):
        mine = [e for e in exchanges if e.kind == kind]
        wrapped[kind] = sum(any(e.prompt.startswith(p + " ") for p in C.PROMPT_PREFIXES) for e in mine) / len(mine)
    assert 0.2 < wrapped["harmful"] < 0.4 and abs(wrapped["harmful"] - wrapped["harmless"]) < 0.06, wrapped
    harmless = [e for e in exchanges if e.kind == "harmless"]
    assert 0.4 < sum(e.answer.startswith("Sure") for e in harmless) / len(harmless) < 0.8
    assert any(e.topic.split()[-1] in {p.split()[-1] for p in C.PEOPLE} for e in harmless)   # people/place requests


def test_instruct_grammar_never_writes_a_heldout_template_or_prompt():
    from qwen_sae_jax.tinymodel.chat import instruct_request
    rng = random.Random(3)
    frames = {instruct_request(rng, "{r}") for _ in range(20000)}
    assert len(frames) > 1000                                 # many phrasings, first and third person
    assert not frames & set(C.HOWTO_TEMPLATES_HELDOUT + C.RECIPE_TEMPLATES_HELDOUT)
    synth = ChatSynthesizer(instruct=True)
    rng = random.Random(4)
    prompts = {synth.exchange(rng, "train").prompt for _ in range(20000)}
    for kind in ("harmful", "harmless"):
        assert not prompts & {r["prompt"] for r in heldout_prompt_records(kind)}


def test_instruct_slot_fillers_never_occur_in_heldout_topics():
    topics = [r["topic"] for kind in ("harmful", "harmless") for r in heldout_prompt_records(kind)]
    requests = [v.format(p=p, o="") for vs in C.HARMFUL_PEOPLE_VERBS_INSTRUCT.values() for v in vs
                for p in C.PEOPLE + C.PEOPLE_INSTRUCT]
    for phrase in C.PEOPLE_INSTRUCT + requests:
        assert not any(phrase in t for t in topics), phrase
