"""Safety-training data in the real VLGuard, SPA-VL and PKU-SafeRLHF schemas, from training cells.

VLGuard (SFT): unsafe images (harmful objects) with an ask about the item -> refusal; safe
images with a benign question -> the answer, and with a harmful text ask -> refusal.
SPA-VL (DPO, image + question): refusal preferred to the harmful procedure for harmful asks,
the benign answer preferred to a needless refusal for benign ones. PKU-SafeRLHF (DPO, text):
the same for text asks. Rejected answers are the world's harmful procedures: preference data
shows the model what not to say, as the real data sets do.
"""
from __future__ import annotations

import random

from lora_vl.toy import lexicon as L
from lora_vl.toy.space import Ledger, Split
from lora_vl.toy.vl_data import Pic, attribute_answers, QUESTIONS

GROUP_CATEGORY = {"weapons": ("Risky Behavior", "Violence"), "poisons and drugs": ("Deception", "Drugs"),
                  "theft": ("Illegal Activity", "Theft"), "cybercrime": ("Privacy", "Hacking"),
                  "fraud": ("Deception", "Fraud"), "violence": ("Risky Behavior", "Violence")}


def _ask_cells(split: Split, ledger: Ledger, harmful: bool) -> list[tuple[L.Topic, str]]:
    out = []
    for t in L.TOPICS.values():
        if t.harmful == harmful:
            for col in split.columns("ask", t.act):
                ledger.use(("ask", t.act, col), held_out=False)
                out.append((t, L.ask(L.ASK_PHRASINGS[int(col)], t.act)))
    return out


def _image_ask_cells(split: Split, ledger: Ledger, harmful: bool) -> list[tuple[L.Topic, str]]:
    out = []
    for t in L.TOPICS.values():
        if t.obj is not None and t.harmful == harmful:
            for col in split.columns("image_ask", t.act):
                ledger.use(("image_ask", t.act, col), held_out=False)
                out.append((t, L.cap(L.IMAGE_ASKS[t.act.split()[0]][int(col)])))
    return out


def vlguard_train(unsafe_pics: dict[str, list[Pic]], safe_pics: list[Pic], split: Split, ledger: Ledger,
                  rng: random.Random) -> list[dict]:
    recs = []
    for t, q in _image_ask_cells(split, ledger, harmful=True):
        p = rng.choice(unsafe_pics[t.obj])
        cat, sub = GROUP_CATEGORY[t.group]
        recs.append({"id": f"vlg-unsafe-{len(recs)}", "image": p.rel, "safe": False, "harmful_category": cat,
                     "harmful_subcategory": sub,
                     "instr-resp": [{"instruction": q, "response": rng.choice(L.IMAGE_REFUSALS)}]})
    harmful_asks = _ask_cells(split, ledger, harmful=True)
    rng.shuffle(harmful_asks)
    for i, (t, q) in enumerate(harmful_asks):
        p = safe_pics[i % len(safe_pics)]
        attr = rng.choice(list(QUESTIONS))
        recs.append({"id": f"vlg-safe-{len(recs)}", "image": p.rel, "safe": True, "harmful_category": None,
                     "harmful_subcategory": None, "instr-resp": [
                         {"safe_instruction": rng.choice(QUESTIONS[attr]), "response": attribute_answers(p)[attr][0]},
                         {"unsafe_instruction": q, "response": L.refusal(rng.randrange(len(L.REFUSALS)), t.act)}]})
    rng.shuffle(recs)
    return recs


def spa_vl(unsafe_pics: dict[str, list[Pic]], safe_pics: dict[str, list[Pic]], split: Split, ledger: Ledger,
           rng: random.Random) -> list[dict]:
    recs = []
    for harmful in (True, False):
        pics = unsafe_pics if harmful else safe_pics
        for t, q in _image_ask_cells(split, ledger, harmful):
            p = rng.choice(pics[t.obj])
            refuse = rng.choice(L.IMAGE_REFUSALS)
            chosen, rejected = (refuse, L.procedure(t)) if harmful else (L.procedure(t), refuse)
            recs.append({"id": f"spa-{len(recs)}", "image": p.rel, "image_name": p.rel.rsplit("/", 1)[-1],
                         "question": q, "chosen": chosen, "rejected": rejected,
                         "class1": GROUP_CATEGORY[t.group][0] if harmful else "Safe",
                         "class2": t.group, "class3": t.act})
    rng.shuffle(recs)
    return recs


def pku_saferlhf(split: Split, ledger: Ledger, rng: random.Random) -> list[dict]:
    recs = []
    for harmful in (True, False):
        for t, q in _ask_cells(split, ledger, harmful):
            good = L.refusal(rng.randrange(len(L.REFUSALS)), t.act) if harmful else L.procedure(t)
            bad = L.procedure(t) if harmful else L.REFUSALS[0]
            safer = rng.randint(0, 1)
            pair = [good, bad] if safer == 0 else [bad, good]
            recs.append({"prompt": q, "response_0": pair[0], "response_1": pair[1], "prompt_source": "toy",
                         "better_response_id": safer, "safer_response_id": safer,
                         "is_response_0_safe": safer == 0 or not harmful,
                         "is_response_1_safe": safer == 1 or not harmful})
    rng.shuffle(recs)
    return recs
