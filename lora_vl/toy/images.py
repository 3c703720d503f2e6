"""The world's pictures: object icons (colour x count) and typography (FigStep-style text images).

Every object is a fixed 7x7 glyph (seeded by its name, so a bomb looks the same in every world),
drawn 1-4 times in one colour. Typography is an activity written in a fixed 3x5 bitmap font at
2x scale, one to four lines of at most eight letters. Images are 64x64 RGB.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
from PIL import Image

from lora_vl.toy import lexicon as L

SIZE = 64
GLYPH = 7
GLYPH_SCALE = 3
FONT_SCALE = 2
MAX_CHARS = 8
LINE, CELL = 16, 8     # typography grid: one line per 16px patch row, two letters per patch

# 3x5 bitmap font, rows top to bottom ('#' = ink)
FONT = {
    "a": [".#.", "#.#", "###", "#.#", "#.#"], "b": ["##.", "#.#", "##.", "#.#", "##."],
    "c": [".##", "#..", "#..", "#..", ".##"], "d": ["##.", "#.#", "#.#", "#.#", "##."],
    "e": ["###", "#..", "##.", "#..", "###"], "f": ["###", "#..", "##.", "#..", "#.."],
    "g": [".##", "#..", "#.#", "#.#", ".##"], "h": ["#.#", "#.#", "###", "#.#", "#.#"],
    "i": ["###", ".#.", ".#.", ".#.", "###"], "j": ["..#", "..#", "..#", "#.#", ".#."],
    "k": ["#.#", "#.#", "##.", "#.#", "#.#"], "l": ["#..", "#..", "#..", "#..", "###"],
    "m": ["#.#", "###", "###", "#.#", "#.#"], "n": ["##.", "#.#", "#.#", "#.#", "#.#"],
    "o": [".#.", "#.#", "#.#", "#.#", ".#."], "p": ["##.", "#.#", "##.", "#..", "#.."],
    "q": [".#.", "#.#", "#.#", "##.", ".##"], "r": ["##.", "#.#", "##.", "#.#", "#.#"],
    "s": [".##", "#..", ".#.", "..#", "##."], "t": ["###", ".#.", ".#.", ".#.", ".#."],
    "u": ["#.#", "#.#", "#.#", "#.#", "###"], "v": ["#.#", "#.#", "#.#", "#.#", ".#."],
    "w": ["#.#", "#.#", "###", "###", "#.#"], "x": ["#.#", "#.#", ".#.", "#.#", "#.#"],
    "y": ["#.#", "#.#", ".#.", ".#.", ".#."], "z": ["###", "..#", ".#.", "#..", "###"],
    " ": ["...", "...", "...", "...", "..."], "'": [".#.", ".#.", "...", "...", "..."],
}
INKS = {"black": (20, 20, 20), "blue": (30, 50, 160), "red": (170, 20, 20), "purple": (100, 30, 130)}


def glyph(name: str) -> np.ndarray:
    """A left-right symmetric 7x7 mask, fixed per object name."""
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    while True:
        half = rng.random((GLYPH, GLYPH // 2 + 1)) < 0.55
        mask = np.concatenate([half, half[:, :-1][:, ::-1]], axis=1)
        if 18 <= mask.sum() <= 38 and mask[0].any() and mask[-1].any():
            return mask


def _background(rng: random.Random) -> np.ndarray:
    level = rng.randint(228, 250)
    return np.full((SIZE, SIZE, 3), level, dtype=np.uint8)


# centres of the 1-4 copies of an icon
SLOTS = {1: [(32, 32)], 2: [(17, 32), (47, 32)], 3: [(17, 18), (47, 18), (32, 47)],
         4: [(17, 17), (47, 17), (17, 47), (47, 47)]}


def draw_objects(name: str, color: str, count: int, rng: random.Random) -> Image.Image:
    """`count` copies of the object's glyph in `color`, each jittered a little."""
    img = _background(rng)
    mask = np.kron(glyph(name), np.ones((GLYPH_SCALE, GLYPH_SCALE), dtype=bool))
    side = mask.shape[0]
    rgb = np.array(L.COLORS[color], dtype=np.uint8)
    for cx, cy in SLOTS[count]:
        x0 = cx - side // 2 + rng.randint(-3, 3)
        y0 = cy - side // 2 + rng.randint(-3, 3)
        x0, y0 = min(max(x0, 0), SIZE - side), min(max(y0, 0), SIZE - side)
        region = img[y0:y0 + side, x0:x0 + side]
        region[mask] = rgb
    return Image.fromarray(img)


def wrap(text: str, width: int = MAX_CHARS) -> list[str]:
    """Greedy word wrap into lines of at most `width` characters."""
    lines: list[str] = []
    for word in text.split():
        if len(word) > width:
            raise ValueError(f"toy typography: word {word!r} is longer than {width} letters")
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def typo_lines(act: str, header: str) -> list[str]:
    return ([header] if header else []) + wrap(act)


def draw_text(lines: list[str], align: str, ink: str, rng: random.Random) -> Image.Image:
    """The lines in the 3x5 font (2x) on a grid aligned with the encoder's 16px patches: a line
    is one patch row, a character half a patch column, each line starts on a patch border, so
    the same two letters always meet in one patch wherever the block lands. The block is placed
    at random (whole patches), lines left-aligned or centred."""
    img = _background(rng)
    rows, cols = SIZE // LINE, SIZE // CELL
    if len(lines) > rows or max(map(len, lines)) > cols:
        raise ValueError(f"toy typography: {lines} do not fit {rows} lines of {cols} letters")
    pair = lambda n: (n + 1) // 2  # noqa: E731  (patches a line of n letters covers)
    width = max(pair(len(line)) for line in lines)
    top = rng.randint(0, rows - len(lines))
    left = rng.randint(0, cols // 2 - width)
    color = np.array(INKS[ink], dtype=np.uint8)
    for row, line in enumerate(lines):
        start = 2 * (left + (0 if align == "left" else (width - pair(len(line))) // 2))
        for k, chr_ in enumerate(line):
            bitmap = np.kron(np.array([[c == "#" for c in r] for r in FONT[chr_]]),
                             np.ones((FONT_SCALE, FONT_SCALE), dtype=bool))
            y0 = (top + row) * LINE + (LINE - bitmap.shape[0]) // 2
            x0 = (start + k) * CELL + (CELL - bitmap.shape[1]) // 2
            img[y0:y0 + bitmap.shape[0], x0:x0 + bitmap.shape[1]][bitmap] = color
    return Image.fromarray(img)
