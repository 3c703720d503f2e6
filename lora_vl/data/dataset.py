"""A training set: the recipe's mixture, validated and measured once, encoded per batch.

The first pass reads every source, draws the seeded subsets, checks each record (images
present and decodable, placeholders matching, an assistant turn) and measures its token
length; bad and over-long records stop the run or are skipped and counted, per the recipe.
Tokens are re-encoded per batch rather than kept, so a 665K-sample mixture costs only its
lengths in memory.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from accelerate.utils import gather_object
from PIL import Image
from tqdm.auto import tqdm

from lora_vl import distributed as dist

from lora_vl.data.batching import collate
from lora_vl.data.check import OVERLONG, CheckCache, Verdict, machine_workers, verdicts
from lora_vl.data.config import DataConfig, DataSource
from lora_vl.data.encode import BadRecord, Encoded, Overlong, encode_chat, encode_lengths
from lora_vl.data.formats import FORMATS, names
from lora_vl.data.images import load_rgb, open_image_file
from lora_vl.data.sample import Sample
from lora_vl.models.templates import STAGE_FORMATS


@dataclass
class DataReport:
    """What the mixture used and what it left out. Admission (the first pass) runs on every
    process alike; batch-time skips happen on the process that built the batch, so the manifest
    sums them over processes (`as_dict`)."""
    used: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)          # bad at admission
    skipped_at_batch: Counter = field(default_factory=Counter)  # bad only once decoded (corrupt past the header)
    dropped_overlong: int = 0
    examples: list[str] = field(default_factory=list)
    batch_examples: list[str] = field(default_factory=list)

    def take_batch_skips(self) -> tuple[Counter, list[str]]:
        """The batch-time skips counted so far, removed: a DataLoader worker hands them back to
        the training process (`add_batch_skips`), whose report is the one written."""
        taken = self.skipped_at_batch, self.batch_examples
        self.skipped_at_batch, self.batch_examples = Counter(), []
        return taken

    def add_batch_skips(self, skipped: Counter, examples: list[str]) -> None:
        self.skipped_at_batch.update(skipped)
        self.batch_examples += examples

    def as_dict(self) -> dict:
        at_batch, examples = Counter(), self.examples + self.batch_examples
        if dist.world_size() > 1:
            for c, ex in gather_object([(self.skipped_at_batch, self.examples + self.batch_examples)]):
                at_batch.update(c)
                examples += [e for e in ex if e not in examples]
        else:
            at_batch = self.skipped_at_batch
        return {"used": dict(self.used), "skipped_bad": dict(self.skipped + at_batch),
                "dropped_overlong": self.dropped_overlong, "skip_examples": examples[:20]}


def draw_subset(samples: list[Sample], src: DataSource, rng: random.Random) -> list[Sample]:
    n = src.num_samples if src.num_samples is not None else round(src.weight * len(samples))
    whole, rest = divmod(n, len(samples)) if samples else (0, 0)
    out = samples * whole + rng.sample(samples, rest)
    return out


def read_sources(cfg: DataConfig, holds: str = "samples") -> list:
    """The seeded mixture of `cfg`'s sources; every source must hold `holds` (samples or pairs)."""
    rng = random.Random(cfg.seed)
    out = []
    for src in cfg.sources:
        fmt = FORMATS[src.format]
        if fmt.holds != holds:
            use = "DPO recipes only" if fmt.holds == "pairs" else "SFT stages, not DPO"
            raise BadRecord(f"data source {src.path}: format {src.format!r} holds {fmt.holds}, read by "
                            f"{use}; expected one of {names(holds)}")
        records = fmt.read(src.path, image_folder=src.image_folder, split=src.split, revision=src.revision)
        if src.id_pattern is not None:
            kept = [r for r in records if re.match(src.id_pattern, str(r.id))]
            if not kept:
                raise BadRecord(f"data source {src.path}: id_pattern {src.id_pattern!r} matches none of its "
                                f"{len(records)} record ids (e.g. {records[0].id!r})" if records else
                                f"data source {src.path}: no records")
            records = kept
        out += draw_subset(records, src, rng)
    return out


def verify_images(sample: Sample) -> None:
    """Every image exists and has an image header. Only the header is read: decoding all of a
    665K-image mixture up front would read ~100 GB; a file corrupt past its header is caught
    when its batch is built (an error, or a counted skip)."""
    for img in sample.images:
        if not isinstance(img, Image.Image):
            open_image_file(img, sample.where).close()


class TrainSet:
    """Samples of the recipe's mixture; subclasses change what a record is (see PairSet) by
    passing `records` and overriding `encode`, `length`, `collate` and `_judge_many`. `workers`
    processes check the records (default: sized to the machine); with `cache` the verdicts are
    reused when nothing they depend on changed."""

    def __init__(self, cfg: DataConfig, processor, records: list | None = None, *,
                 cache: CheckCache | None = None, workers: int | None = None):
        self.cfg, self.processor = cfg, processor
        self.pad_id = processor.tokenizer.pad_token_id
        self.report = DataReport()
        self.samples: list = []
        self.lengths: list[int] = []
        records = read_sources(cfg) if records is None else records
        key = cache.key(cfg, type(self).__name__, processor, self.chat_template) if cache else None
        held = cache.load(key, len(records)) if cache else None
        found = held if held is not None else verdicts(
            lambda a, b: self._judge_many(records[a:b]), len(records), workers or machine_workers())
        try:
            kept = [self._admit(s, v) for s, v in zip(records, found)]
        finally:  # a first bad record: end the pool and clear the progress bar before the error prints
            if held is None:
                found.close()
        if cache and held is None:
            cache.save(key, kept)
        if not self.samples:
            raise BadRecord(f"no usable records in the data mixture ({self.report.as_dict()})")
        skipped = sum(self.report.skipped.values())
        # never silently: say it now, detail in the manifest
        if (skipped or self.report.dropped_overlong) and dist.is_main():
            tqdm.write(f"data: using {len(self.samples)} records; skipped {skipped} bad, dropped "
                       f"{self.report.dropped_overlong} over max_length {cfg.max_length} "
                       f"(first: {self.report.examples[0] if self.report.examples else '-'})")

    @property
    def chat_template(self) -> str | None:
        return STAGE_FORMATS[self.cfg.chat_format]

    def _judge_many(self, records: list) -> list[Verdict]:
        """The verdicts of consecutive records, encoded together (`encode_lengths`): what `_judge`
        gives each, at a fraction of the tokenizer's per-call cost. A subclass whose `encode`
        differs judges one at a time (PairSet)."""
        found: list = [None] * len(records)
        todo = []
        for k, s in enumerate(records):
            try:
                verify_images(s)
                todo.append(k)
            except BadRecord as e:
                found[k] = str(e)
        encoded = encode_lengths(self.processor, [(records[k].messages, len(records[k].images), records[k].where)
                                                  for k in todo], max_length=self.cfg.max_length,
                                 truncate=self.cfg.overlong == "truncate", chat_template=self.chat_template)
        for k, enc in zip(todo, encoded):
            found[k] = (OVERLONG if isinstance(enc, Overlong) else str(enc) if isinstance(enc, BadRecord)
                        else self.length(enc))
        return found

    def _judge(self, s) -> Verdict:
        """The record's verdict: its length, OVERLONG, or why it is bad (see data/check.py)."""
        try:
            verify_images(s)
            return self.length(self.encode(s, with_pixels=False))
        except Overlong:
            return OVERLONG
        except BadRecord as e:
            return str(e)

    def _admit(self, s, verdict: Verdict) -> Verdict:
        """Apply the policy to one verdict, in record order (so the first bad record is named)."""
        if verdict == OVERLONG:
            self.report.dropped_overlong += 1
        elif isinstance(verdict, str):
            if self.cfg.bad_records == "error":
                raise BadRecord(verdict)
            self.report.skipped[s.source] += 1
            self.report.examples.append(verdict)
        else:
            self.samples.append(s)
            self.lengths.append(verdict)
            self.report.used[s.source] += 1
        return verdict

    def encode(self, s: Sample, with_pixels: bool = True) -> Encoded:
        images = [load_rgb(i, s.where) for i in s.images] if with_pixels else [None] * len(s.images)
        return encode_chat(self.processor, s.messages, images, max_length=self.cfg.max_length,
                           truncate=self.cfg.overlong == "truncate", where=s.where,
                           with_pixels=with_pixels, chat_template=self.chat_template)

    def length(self, enc: Encoded) -> int:
        return len(enc.input_ids)

    def collate(self, items: list) -> dict | None:
        return collate(items, self.pad_id)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Encoded | None:
        """None marks a record that failed at load time under `bad_records: skip`."""
        try:
            return self.encode(self.samples[i])
        except BadRecord as e:
            if self.cfg.bad_records == "error":
                raise
            self.report.skipped_at_batch[self.samples[i].source] += 1
            self.report.batch_examples.append(str(e))
            return None
