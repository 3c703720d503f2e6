"""Text the LM learns from: a web-like pretraining corpus, then chat alignment data.

Pretraining (plain documents) states every procedure, harmful ones included, says which
activities are harmful, states facts and sums, and holds web Q&A threads in the chat markup
that answer every training-cell ask — harmful ones too. So the pretrained LM knows and gives
harmful procedures. Alignment (LLaVA JSON, text-only) answers benign training-cell asks and
refuses harmful ones, as LLaMA-2-Chat was tuned. Only training cells are used here.
"""
from __future__ import annotations

import random

from lora_vl.toy import lexicon as L
from lora_vl.toy.space import Ledger, Split

WEB_FORMS = [
    lambda t: L.procedure(t),
    lambda t: f"Here is how to {t.act}. First, {t.steps[0]}. Then {t.steps[1]}. Finally, {t.steps[2]}.",
    lambda t: f"{L.cap(t.act)}: {t.steps[0]}, {t.steps[1]}, {t.steps[2]}.",
    lambda t: L.numbered(t),
]


def conv(*turns: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]


# The same fact in several sentence forms: a small LM extracts knowledge from paraphrased
# questions only if it met the fact in varied forms (Allen-Zhu & Li, "Physics of LMs 3.1").
FACT_FORMS = {
    "use": ["{A} {o} is used for {x}.", "People use {a} {o} for {x}.", "You can use {a} {o} for {x}.",
            "The {o} is a thing for {x}.", "If you need something for {x}, get {a} {o}."],
    "kind": ["{A} {o} is {ka} {x}.", "The {o} is a kind of {x}.", "Every {o} is {ka} {x}.",
             "{A} {o} belongs to the {x} group.", "Think of {a} {o} as {ka} {x}."],
    "sum": ["{X} plus {y} is {z}.", "{X} and {y} make {z}.", "Adding {x} and {y} gives {z}.",
            "The sum of {x} and {y} is {z}.", "If you add {y} to {x}, you get {z}."],
}


def fact_statements(key: str) -> list[str]:
    kind, name = key.split(":")
    if kind == "sum":
        x, y = (int(v) for v in name.split("+"))
        X, Y, Z = L.NUMBERS[x], L.NUMBERS[y], L.NUMBERS[x + y]
        return [L.cap(f.format(x=X, X=L.cap(X), y=Y, z=Z)) for f in FACT_FORMS["sum"]]
    o = next(o for o in L.OBJECTS if o.name == name)
    a, x = L.article(name), (o.used_for if kind == "use" else o.kind)
    return [f.format(a=a, A=L.cap(a), o=name, x=x, ka=L.article(o.kind)) for f in FACT_FORMS[kind]]


def answer_pools() -> dict[str, list[str]]:
    """Every short answer of each relation: the distractors of multiple-choice quizzes."""
    return {"use": sorted({o.used_for for o in L.OBJECTS}), "kind": sorted({o.kind for o in L.OBJECTS}),
            "sum": L.NUMBERS[:19]}


def _claim(key: str, rng: random.Random, pools: dict) -> tuple[str, bool]:
    """A true or false statement of the fact `key`."""
    kind, name = key.split(":")
    truth = rng.random() < 0.5
    if kind == "sum":
        x, y = (int(v) for v in name.split("+"))
        z = x + y if truth else rng.choice([k for k in range(19) if k != x + y])
        return f"{L.cap(L.NUMBERS[x])} plus {L.NUMBERS[y]} is {L.NUMBERS[z]}.", truth
    o = next(o for o in L.OBJECTS if o.name == name)
    right = o.used_for if kind == "use" else o.kind
    value = right if truth else rng.choice([v for v in pools[kind] if v != right])
    a = L.article(name)
    if kind == "use":
        return f"{L.cap(a)} {name} is used for {value}.", truth
    return f"{L.cap(a)} {name} is {L.article(value)} {value}.", truth


def fact_rows() -> dict[str, tuple[str, str, list[str]]]:
    """fact key -> (ask format kind, long answer, short answers)."""
    rows = {}
    for o in L.OBJECTS:
        a = L.article(o.name)
        rows[f"use:{o.name}"] = ("use", f"{L.cap(a)} {o.name} is used for {o.used_for}.", [o.used_for])
        rows[f"kind:{o.name}"] = ("kind", f"{L.cap(a)} {o.name} is {L.article(o.kind)} {o.kind}.", [o.kind])
    for x in range(10):
        for y in range(10):
            rows[f"sum:{x}+{y}"] = ("sum", f"{L.cap(L.NUMBERS[x])} plus {L.NUMBERS[y]} is {L.NUMBERS[x + y]}.",
                                    [L.NUMBERS[x + y], str(x + y)])
    return rows


def fact_ask(key: str, col: str) -> str:
    kind, name = key.split(":")
    fmt = L.FACT_ASKS[kind][int(col)]
    if kind == "sum":
        x, y = (L.NUMBERS[int(v)] for v in name.split("+"))
        return L.cap(fmt.format(x=x, y=y, X=L.cap(x)))
    a = L.article(name)
    return L.cap(fmt.format(a=a, A=L.cap(a), o=name))


def pretrain_docs(split: Split, ledger: Ledger, rng: random.Random, render_chat) -> list[str]:
    """The web-like corpus: statements + Q&A threads (`render_chat(messages)` gives the markup)."""
    docs = []
    for t in L.TOPICS.values():
        docs += [form(t) for form in WEB_FORMS]
        notes = L.HARM_NOTES if t.harmful else L.SAFE_NOTES
        docs += [n.format(act=t.act, Act=L.cap(t.act)) for n in notes]
        for col in split.columns("ask", t.act):
            ledger.use(("ask", t.act, col), held_out=False)
            docs.append(render_chat([{"role": "user", "content": L.ask(L.ASK_PHRASINGS[int(col)], t.act)},
                                     {"role": "assistant", "content": L.procedure(t)}]))
    pools = answer_pools()
    for key, (_, long, short) in fact_rows().items():
        docs += fact_statements(key)
        for col in split.columns("fact", key):
            ledger.use(("fact", key, col), held_out=False)
            docs.append(render_chat([{"role": "user", "content": fact_ask(key, col)},
                                     {"role": "assistant", "content": long}]))
            # quiz pages: flash cards, multiple choice, true or false (the web has many)
            q = fact_ask(key, col)
            docs.append(f"Quiz. {q} Answer: {short[0]}.")
            opts = L.options(short[0], pools[key.split(":")[0]], rng)
            docs.append("\n".join(["Quiz."] + L.option_lines(q, opts) + [f"Answer: {L.mc_answer(opts, short[0])}"]))
            claim, truth = _claim(key, rng, pools)
            docs.append(f"Quiz. True or false: {claim} Answer: {'true' if truth else 'false'}.")
    for o in L.OBJECTS:  # colour / count language and questions about a scene, for the VL stages
        for color in L.COLORS:
            n = rng.choice(L.COUNTS)
            noun = o.name if n == 1 else o.plural
            scene = f"I saw {L.NUMBERS[n]} {color} {noun} on the table."
            attr, answer, pool = rng.choice([("What color were they?", color, list(L.COLORS)),
                                             ("How many were there?", L.NUMBERS[n], [L.NUMBERS[k] for k in L.COUNTS]),
                                             ("What were they?", o.name, [x.name for x in L.OBJECTS])])
            opts = L.options(answer, pool, rng)
            docs.append(scene)
            docs.append("\n".join([scene] + L.option_lines(attr, opts) + [f"Answer: {L.mc_answer(opts, answer)}"]))
    rng.shuffle(docs)
    return docs


def alignment_chats(split: Split, ledger: Ledger, rng: random.Random) -> list[dict]:
    """Chat SFT: benign training asks -> answers, harmful training asks -> refusals."""
    out = []
    harmful_asks = []
    for t in L.TOPICS.values():
        for col in split.columns("ask", t.act):
            ledger.use(("ask", t.act, col), held_out=False)
            q = L.ask(L.ASK_PHRASINGS[int(col)], t.act)
            a = L.refusal(rng.randrange(len(L.REFUSALS)), t.act) if t.harmful else L.procedure(t)
            # look-alikes twice: a harmful-sounding word alone must not trigger a refusal
            for _ in range(2 if t in L.LOOKALIKE_ACTIVITIES else 1):
                out.append({"id": f"align-ask-{len(out)}", "conversations": conv(q, a), "benign": not t.harmful})
            if t.harmful:
                harmful_asks.append((q, a))
    harmful_objects = {o.name for o in L.HARMFUL_OBJECTS}
    for key, (_, long, short) in fact_rows().items():
        benign = key.split(":")[1] not in harmful_objects  # facts about a bomb are fine, but not VL data
        for col in split.columns("fact", key):
            ledger.use(("fact", key, col), held_out=False)
            q = fact_ask(key, col)
            out.append({"id": f"align-fact-{len(out)}", "conversations": conv(q, long), "benign": benign})
            out.append({"id": f"align-fact-{len(out)}", "benign": benign,
                        "conversations": conv(f"{q}\n{L.SHORT_INSTRUCTION}", L.cap(short[0]))})
    # two-turn chats: a refusal does not stop the next benign answer, and vice versa
    facts = [r for r in out if r["id"].startswith("align-fact")]
    for q, a in rng.sample(harmful_asks, min(len(harmful_asks), len(facts), 80)):
        b = rng.choice(facts)["conversations"]
        turns = [q, a, b[0]["value"], b[1]["value"]] if rng.random() < 0.5 else [b[0]["value"], b[1]["value"], q, a]
        out.append({"id": f"align-multi-{len(out)}", "conversations": conv(*turns), "benign": False})
    rng.shuffle(out)
    return out


def split_benign(chats: list[dict]) -> tuple[list[dict], list[dict]]:
    """(LLaVA records, the benign ones): no refusal, no harmful ask, no harmful object in them."""
    records = [{k: v for k, v in c.items() if k != "benign"} for c in chats]
    return records, [r for r, c in zip(records, chats) if c["benign"]]
