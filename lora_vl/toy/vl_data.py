"""VL-adaptation data in the LLaVA JSON format: stage-1 captions and stage-2 instructions.

Stage 1 captions every training image, harmful objects and harmful typography included, with
neutral captions (as web alt-text is). Stage 2 is benign only, as the study filtered its data:
multi-turn VQA, short answers, multiple choice and yes/no about benign objects, "how do I
make/use the item in the image?" answered with the benign procedure, benign typography read
out or expanded as a numbered list (FigStep's prompt), and benign text chat. Pictures of harmful
objects and harmful typography appear only to be described, named or read out (perception, as
LLaVA's data describes a knife or reads a sign). No harmful request and no refusal appears in it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lora_vl.toy import images as I
from lora_vl.toy import lexicon as L
from lora_vl.toy.space import Ledger, Split
from lora_vl.toy.text_data import conv

CAPTION_ASKS = ["Describe the image briefly.", "What is in the picture?", "Give a short caption for the image.",
                "Summarize the image in a few words."]
OBJECT_QS = ["What is the object in the image?", "What object is shown in the picture?", "What is this item?"]
COLOR_QS = ["What color is the object in the image?", "What color are the items in the picture?",
            "Which color is the object?"]
COUNT_QS = ["How many objects are in the image?", "How many items are shown in the picture?",
            "How many things can you see?"]
TEXT_QS = ["What activity is written in the image?", "What does the text in the image name?",
           "Which activity does the picture spell out?"]
YES_NO = "Please answer yes or no."
INKS = list(I.INKS)


@dataclass(frozen=True)
class Pic:
    """One rendered image: what it shows, and where it lies relative to its JSON's folder."""
    rel: str
    kind: str            # "object" | "text"
    obj: str | None = None
    color: str | None = None
    count: int | None = None
    act: str | None = None
    layout: int | None = None


class Painter:
    """Renders pictures under `root/sub` and names them by content (so names are stable)."""

    def __init__(self, root: Path, sub: str, rng: random.Random):
        self.root, self.sub, self.rng, self.n = Path(root), sub, rng, 0
        (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _save(self, img, stem: str, ext: str) -> str:
        self.n += 1
        rel = f"{self.sub}/{self.n:05d}_{stem}.{ext}"
        img.save(self.root / rel, quality=95) if ext == "jpg" else img.save(self.root / rel)
        return rel

    def objects(self, obj: str, color: str, count: int, ext: str = "png") -> Pic:
        img = I.draw_objects(obj, color, count, self.rng)
        return Pic(self._save(img, f"{obj}_{color}_{count}", ext), "object", obj, color, count)

    def text(self, act: str, layout: int, ext: str = "png") -> Pic:
        header, align = L.TYPO_LAYOUTS[layout]
        img = I.draw_text(I.typo_lines(act, header), align, self.rng.choice(INKS), self.rng)
        return Pic(self._save(img, f"text_{act.replace(' ', '-')}_{layout}", ext), "text", act=act, layout=layout)


def visual_cells(split: Split, ledger: Ledger, objs, held_out: bool) -> list[tuple[str, str, int]]:
    out = []
    for o in objs:
        for col in split.columns("visual", o.name, held_out):
            ledger.use(("visual", o.name, col), held_out)
            color, n = col.split("/")
            out.append((o.name, color, int(n)))
    return out


def noun(o: L.Obj, n: int) -> str:
    return o.name if n == 1 else o.plural


def caption(p: Pic) -> str:
    if p.kind == "text":
        header = L.TYPO_LAYOUTS[p.layout][0]
        return f"Text that reads: {(header + ' ' if header else '')}{p.act}."
    return f"{L.cap(L.NUMBERS[p.count])} {p.color} {noun(L_OBJ[p.obj], p.count)}."


L_OBJ = {o.name: o for o in L.OBJECTS}


def attribute_answers(p: Pic) -> dict[str, tuple[str, str]]:
    """attribute -> (long answer, short answer) for an object picture."""
    o, n = L_OBJ[p.obj], p.count
    one = n == 1
    return {"object": (f"It is {L.article(o.name)} {o.name}." if one else f"They are {o.plural}.", o.name),
            "color": (f"It is {p.color}." if one else f"They are {p.color}.", p.color),
            "count": (f"There {'is' if one else 'are'} {L.NUMBERS[n]}.", L.NUMBERS[n])}


QUESTIONS = {"object": OBJECT_QS, "color": COLOR_QS, "count": COUNT_QS}


def attribute_pool(attr: str) -> list[str]:
    return {"object": [o.name for o in L.BENIGN_OBJECTS], "color": list(L.COLORS),
            "count": [L.NUMBERS[n] for n in L.COUNTS]}[attr]


def yes_no(p: Pic, rng: random.Random, want: bool) -> tuple[str, str]:
    """(an MME-style yes/no question about `p` whose true answer is `want`, what `p` really shows)."""
    attr = rng.choice(["object", "color", "count"])
    truth = attribute_answers(p)[attr][1]
    value = truth if want else rng.choice([x for x in attribute_pool(attr) if x != truth])
    q = {"object": f"Is there {L.article(value)} {value} in the image?",
         "color": f"Is the object in the image {value}?",
         "count": f"Are there {value} objects in the image?"}[attr]
    return f"{q} {YES_NO}", truth


CHAT_KINDS = ("multi", "short", "mc", "yesno", "describe")


def object_chat(p: Pic, rng: random.Random, lead: str = "<image>\n", kind: str | None = None) -> list[dict]:
    """One of: multi-turn VQA, a short answer, multiple choice, yes/no, a description. `lead`
    opens the first turn: the image placeholder, or the picture described in words."""
    answers = attribute_answers(p)
    kind = kind or rng.choice(CHAT_KINDS)
    if kind == "multi":
        attrs = rng.sample(list(answers), rng.choice([2, 3]))
        turns = []
        for i, a in enumerate(attrs):
            q = rng.choice(QUESTIONS[a])
            turns += [f"{lead}{q}" if i == 0 else q, answers[a][0]]
        return conv(*turns)
    attr = rng.choice(list(answers))
    q = rng.choice(QUESTIONS[attr])
    if kind == "short":
        return conv(f"{lead}{q}\n{L.SHORT_INSTRUCTION}", answers[attr][1])
    if kind == "mc":
        opts = L.options(answers[attr][1], attribute_pool(attr), rng)
        return conv(f"{lead}{L.mc_prompt(q, opts)}", L.mc_answer(opts, answers[attr][1]))
    if kind == "yesno":
        want = rng.random() < 0.5
        q, truth = yes_no(p, rng, want)
        return conv(f"{lead}{q}" + (f"\n{L.SHORT_INSTRUCTION}" if rng.random() < 0.5 else ""),
                    L.yes_no_answer(truth, want))
    return conv(f"{lead}Describe the image.", f"The image shows {caption(p)[0].lower()}{caption(p)[1:]}")


def text_chat(p: Pic, rng: random.Random, lead: str = "<image>\n", kind: str | None = None) -> list[dict]:
    """Typography: FigStep's prompt answered with the numbered procedure (benign activities;
    the aligned LM refuses harmful ones), or the written activity read out."""
    t = L.TOPICS[p.act]
    kind = kind or rng.choice(["figstep", "figstep", "read", "short", "mc"])
    q = rng.choice(TEXT_QS)
    if kind == "figstep":
        return conv(f"{lead}{L.FIGSTEP_PROMPT}", L.refusal(rng.randrange(3), t.act) if t.harmful else L.numbered(t))
    if kind == "read":
        return conv(f"{lead}{q}", f"The text names the activity: {t.act}.")
    if kind == "short":
        return conv(f"{lead}{q}\n{L.SHORT_INSTRUCTION}", t.act)
    pool = [x.act for x in L.BENIGN_TOPICS]
    opts = L.options(t.act, pool, rng)
    return conv(f"{lead}{L.mc_prompt(q, opts)}", L.mc_answer(opts, t.act))


def described(p: Pic) -> str:
    """A picture put into words, for text-only chat about it."""
    return f"Here is a description of an image: {caption(p)}\n"


def described_image_chats(split: Split, ledger: Ledger, rng: random.Random) -> list[dict]:
    """Alignment chats about pictures described in words (training cells): questions about an
    object's colour, count or kind, asks to make/use "the item in the image" (benign -> the
    procedure, harmful -> refusal) and typography (FigStep's prompt: benign -> the numbered
    steps, harmful -> refusal). They teach the chat LM the question formats the VL stages reuse;
    `benign` marks those fit for the (benign-only) stage-2 text chat."""
    out = []
    for obj, color, count in visual_cells(split, ledger, L.OBJECTS, held_out=False):
        p = Pic("", "object", obj, color, count)
        for kind in ("describe", "mc", "yesno"):
            out.append({"conversations": object_chat(p, rng, described(p), kind), "benign": not L_OBJ[obj].harmful})
    for t in L.TOPICS.values():
        if t.obj is not None:
            for col in split.columns("image_ask", t.act):
                ledger.use(("image_ask", t.act, col), held_out=False)
                p = Pic("", "object", t.obj, rng.choice(list(L.COLORS)), rng.choice(L.COUNTS))
                answer = L.refusal(rng.randrange(3), t.act) if t.harmful else L.procedure(t)
                out.append({"conversations": conv(f"{described(p)}{L.cap(L.IMAGE_ASKS[t.act.split()[0]][int(col)])}",
                                                  answer), "benign": not t.harmful})
        for col in split.columns("typo", t.act):
            ledger.use(("typo", t.act, col), held_out=False)
            p = Pic("", "text", act=t.act, layout=int(col))
            out.append({"conversations": text_chat(p, rng, described(p)), "benign": not t.harmful})
    return [{"id": f"align-described-{i}", **r} for i, r in enumerate(out)]


def stage1_captions(pics: list[Pic], rng: random.Random) -> list[dict]:
    return [{"id": f"cap-{i}", "image": p.rel,
             "conversations": conv(f"<image>\n{rng.choice(CAPTION_ASKS)}", caption(p))}
            for i, p in enumerate(pics)]


def stage2_instructions(obj_pics: list[Pic], text_pics: list[Pic], seen_pics: list[Pic], split: Split,
                        ledger: Ledger, text_chats: list[dict], rng: random.Random, per_image: int) -> list[dict]:
    """Benign visual instructions + "how do I make/use the item?" + benign typography + text chat,
    and neutral perception of `seen_pics` (harmful objects and harmful typography: described, named
    or read out, never a request about them), as LLaVA's data describes knives or reads any sign."""
    out = []
    for p in obj_pics:  # every picture described once, then asked about (LLaVA's mix is mostly short answers)
        kinds = ["describe"] + rng.sample(CHAT_KINDS[:4], per_image)
        out += [{"image": p.rel, "conversations": object_chat(p, rng, kind=k)} for k in kinds]
    for p in seen_pics:  # one perception task each
        if p.kind == "object":
            out.append({"image": p.rel, "conversations": object_chat(p, rng, kind=rng.choice(["describe", "multi",
                                                                                               "short"]))})
        else:
            out.append({"image": p.rel, "conversations": text_chat(p, rng, kind=rng.choice(["read", "short"]))})
    by_obj: dict[str, list[Pic]] = {}
    for p in obj_pics:
        by_obj.setdefault(p.obj, []).append(p)
    for t in L.BENIGN_TOPICS:
        if t.obj is None:
            continue
        verb = t.act.split()[0]
        if not by_obj.get(t.obj):  # (test scale: not every object has a picture)
            continue
        for col in split.columns("image_ask", t.act):
            ledger.use(("image_ask", t.act, col), held_out=False)
            for p in rng.sample(by_obj[t.obj], min(2, len(by_obj[t.obj]))):
                out.append({"image": p.rel, "conversations": conv(
                    f"<image>\n{L.cap(L.IMAGE_ASKS[verb][int(col)])}", L.procedure(t))})
    for p in text_pics:  # read it out, then one more task about it
        out += [{"image": p.rel, "conversations": text_chat(p, rng, kind=k)} for k in ("short", None)]
    out += [{"conversations": c["conversations"]} for c in text_chats]
    rng.shuffle(out)
    return [{"id": f"inst-{i}", **r} for i, r in enumerate(out)]
