"""Model shapes without weights: a recipe's LM + vision encoder (or Llava base) as configs.

The paper models' configs are vendored as small JSON files in `configs/` (public config.json
facts), so planning needs no hub; any other model resolves from a local directory, or from the
hub when it is reachable. The Llava config is built the way `models/compose.py` composes one
(same projector, image-token and feature-selection rules), at any number of decoder layers.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from transformers import AutoConfig, CLIPVisionConfig, LlavaConfig, PretrainedConfig

from lora_vl.errors import InputError
from lora_vl.models.compose import IMAGE_TOKEN, num_image_tokens, select_strategy, vision_family

CONFIG_DIR = Path(__file__).parent / "configs"


@cache
def vendored() -> dict[str, dict]:
    """{hub id: vendored entry} for every JSON file in configs/."""
    out = {}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        entry = json.loads(path.read_text())
        for hub_id in entry["hub_ids"]:
            out[hub_id] = {**entry, "file": path.name}
    return out


@dataclass
class ModelShape:
    """Everything the planner needs to build the model at any depth."""
    text: PretrainedConfig
    vision: PretrainedConfig
    image_token_id: int
    feature_layer: int
    strategy: str
    source: str  # where the shapes came from, for the report

    @property
    def layers(self) -> int:
        return self.text.num_hidden_layers

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

    @property
    def image_tokens(self) -> int:
        return num_image_tokens(self.vision, self.strategy)

    def scored_per_row(self, length: int) -> int:
        """Positions a planned row's loss scores: those whose next token is labelled. `plan/step.py:
        make_batch` leaves the BOS and the image tokens unlabelled, so the first `image_tokens`
        positions score nothing, nor does the last (no next token)."""
        return length - 1 - self.image_tokens

    def llava_config(self, n_layers: int | None = None) -> LlavaConfig:
        text = copy.deepcopy(self.text)
        if n_layers is not None:
            set_depth(text, n_layers)
        return LlavaConfig(
            vision_config=self.vision.to_dict(), text_config=text.to_dict(),
            image_token_index=self.image_token_id, image_seq_length=self.image_tokens,
            projector_hidden_act="gelu", vision_feature_layer=self.feature_layer,
            vision_feature_select_strategy=self.strategy,
            tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)))


def set_depth(text: PretrainedConfig, n_layers: int) -> None:
    """Same layer at another depth (per-layer type lists follow, e.g. Qwen2's layer_types)."""
    types = getattr(text, "layer_types", None)
    if isinstance(types, list) and types:
        text.layer_types = (types * (n_layers // len(types) + 1))[:n_layers]
    text.num_hidden_layers = n_layers


def lm_config(name: str, revision: str | None = None) -> tuple[PretrainedConfig, bool, str]:
    """(text config, whether its tokenizer already has an <image> token, source)."""
    known = vendored().get(name)
    if known is not None:
        return AutoConfig.for_model(**known["config"]), known["has_image_token"], f"vendored {known['file']}"
    cfg = _auto_config(name, revision, "model.lm")
    return cfg, _tokenizer_has_image_token(name, revision), name


def vision_config(name: str, revision: str | None = None) -> tuple[PretrainedConfig, str]:
    known = vendored().get(name)
    if known is not None:
        return CLIPVisionConfig(**known["config"]), f"vendored {known['file']}"
    cfg = _auto_config(name, revision, "model.vision")
    return getattr(cfg, "vision_config", cfg), name


def _auto_config(name: str, revision: str | None, key: str) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as e:
        raise InputError(f"{key} {name!r}: no config found (not a local model directory, not one of the "
                         f"vendored configs {sorted(vendored())}, and the hub did not answer: {e})") from e


def _tokenizer_has_image_token(name: str, revision: str | None) -> bool:
    from transformers import AutoTokenizer

    try:
        return IMAGE_TOKEN in AutoTokenizer.from_pretrained(name, revision=revision).get_vocab()
    except (OSError, ValueError):
        return False  # no tokenizer readable: compose would add the token, so plan for the extra row


def compose_shape(lm: str, vision: str, *, lm_revision=None, vision_revision=None,
                  feature_layer: int = -2, strategy: str = "auto") -> ModelShape:
    """The shape `lora-vl compose` would give LM + vision (one embedding row added for <image>)."""
    text, has_image, lm_src = lm_config(lm, lm_revision)
    vis, vis_src = vision_config(vision, vision_revision)
    text = copy.deepcopy(text)
    image_token_id = text.vocab_size
    if not has_image:
        text.vocab_size += 1
    else:  # the token exists: its id is unknown without the tokenizer's vocab, any in range will do
        image_token_id = text.vocab_size - 1
    try:
        chosen = select_strategy(strategy, vision_family(vis))
    except ValueError as e:
        raise InputError(f"model.vision_feature_select_strategy: {e}") from e
    return ModelShape(text, vis, image_token_id, feature_layer, chosen, f"{lm_src} + {vis_src}")


def base_shape(base: str) -> ModelShape:
    """The shape of an existing Llava checkpoint directory."""
    cfg = LlavaConfig.from_pretrained(base)
    if cfg.model_type != "llava":
        raise InputError(f"model.base {base!r}: model_type is {cfg.model_type!r}, expected 'llava'")
    return ModelShape(cfg.text_config, cfg.vision_config, cfg.image_token_index, cfg.vision_feature_layer,
                      cfg.vision_feature_select_strategy, f"{base}/config.json")


def recipe_shape(model, lm: str | None = None, vision: str | None = None) -> ModelShape:
    """A recipe's `model:` section as a shape; `lm`/`vision` (from the command line) win."""
    if lm or vision:
        if not (lm and vision):
            raise InputError("--lm and --vision go together: give both")
        return compose_shape(lm, vision, feature_layer=model.vision_feature_layer,
                             strategy=model.vision_feature_select_strategy)
    if model.base is not None and (Path(model.base) / "config.json").is_file():
        return base_shape(model.base)
    if model.lm and model.vision:
        return compose_shape(model.lm, model.vision, lm_revision=model.lm_revision,
                             vision_revision=model.vision_revision, feature_layer=model.vision_feature_layer,
                             strategy=model.vision_feature_select_strategy)
    raise InputError(f"model.base {model.base!r}: not a local Llava checkpoint yet (it is made by "
                     "`lora-vl adapt`), so its shape is unknown; give the models it is composed of with "
                     "--lm ID --vision ID (e.g. --lm meta-llama/Llama-2-7b-chat-hf "
                     "--vision openai/clip-vit-large-patch14-336)")
