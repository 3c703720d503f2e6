"""Chat formats by name: Jinja chat templates, the form `apply_chat_template` reads.

An LM's own formats, for LMs that ship no template (`auto` keeps the LM's own when it has one):
  llama2  Llama-2-Chat's [INST] format.
  tulu2   Tulu-2's format as open-instruct trains and evaluates it: BOS first, contents stripped,
          no newline after the last end-of-sequence.
  chatml  ChatML (Qwen-style), for small modern models.
LLaVA's conversation formats (LLaVA-1.5's `llava/conversation.py` and `preprocess_multimodal`):
  llava_llama_2  `conv_llava_llama_2`: LLaVA's system block in the first [INST] (a record's own
                 system turn replaces it), and `<image>` moved to the front of its turn as `<image>\\n`.
  llava_tulu2    Tulu-2's format with LLaVA's `<image>` placement (LLaVA has no Tulu conversation).
  plain          stage 1 (`conv_llava_plain`, `preprocess_plain`): `<image>`, the caption and a
                 newline; the instruction is dropped and the loss is on the caption. A stage picks
                 it with `data.chat_format: plain`, not as a model's format.

Every template is prefix-stable (rendering the first k messages is a prefix of rendering k+1,
and a generation prompt is a prefix of the rendered answer), which `lora_vl.data.encode` relies
on to find the assistant tokens.
"""
from lora_vl.errors import InputError

LLAVA_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual "
                "content that the user provides, and assist the user with a variety of tasks using natural "
                "language.")

# LLaVA's preprocess_multimodal: a turn holding <image> becomes '<image>\n' + the rest, stripped
IMAGE_FIRST = ("{% set content = message['content'] %}{% if '<image>' in content %}"
               "{% set content = ('<image>\\n' + content.replace('<image>', '').strip()).strip() %}{% endif %}")
KEEP_CONTENT = "{% set content = message['content'] %}"


def _llama2(system: str, turn: str, strip: bool) -> str:
    s = ".strip()" if strip else ""
    return (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
        "{% else %}{% set system_message = " + system + " %}{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}" + turn +
        "{% if loop.index0 == 0 and system_message %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + content %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content" + s + " + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + content" + s + " + ' ' + eos_token }}"
        "{% endif %}{% endfor %}"
    )


def _tulu2(turn: str) -> str:
    # open-instruct strips each content and the whole text: no '\n' after the last </s>
    return (
        "{{ bos_token }}{% for message in messages %}" + turn +
        "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + content.strip() + '\\n' }}"
        "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + content.strip() + '\\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + content.strip() + eos_token }}"
        "{% if not loop.last %}{{ '\\n' }}{% endif %}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    )


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

PLAIN = (
    "{% if messages|length > 2 or messages[0]['role'] != 'user' or '<image>' not in messages[0]['content'] %}"
    "{{ raise_exception('the plain (stage-1) format takes one user turn with <image> and one caption') }}"
    "{% endif %}{% if bos_token %}{{ bos_token }}{% endif %}{{ '<image>' }}"
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ message['content'] + '\\n' }}"
    "{% endif %}{% endfor %}"
)

TEMPLATES = {
    "llama2": _llama2("''", KEEP_CONTENT, strip=True),
    "tulu2": _tulu2(KEEP_CONTENT),
    "chatml": CHATML,
    "llava_llama_2": _llama2('"' + LLAVA_SYSTEM + '"', IMAGE_FIRST, strip=False),
    "llava_tulu2": _tulu2(IMAGE_FIRST),
}
STAGE_FORMATS = {"model": None, "plain": PLAIN}  # data.chat_format: None = the model's own template


def resolve_template(name: str, tokenizer) -> str:
    """`auto` keeps the tokenizer's own template; a name picks one of ours."""
    if name == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if not own:
            raise InputError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; set "
                             f"model.chat_template to one of {sorted(TEMPLATES)}, or save the LM's own "
                             f"template with its tokenizer (chat_template.jinja)")
        return own
    if name not in TEMPLATES:
        raise InputError(f"model.chat_template: unknown template {name!r}; expected auto or one of "
                         f"{sorted(TEMPLATES)}")
    return TEMPLATES[name]
