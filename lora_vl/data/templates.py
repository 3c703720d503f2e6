"""Chat templates for LMs that ship none (Jinja, the format `apply_chat_template` reads).

An LM's own template is used when it has one. These reproduce the documented prompt formats
of Llama-2-Chat and Tulu-2, plus ChatML (Qwen-style) for small modern models. All are
prefix-stable (rendering the first k messages is a prefix of rendering k+1), which
`lora_vl.data.encode` relies on to find assistant spans.
"""

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set system_message = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if loop.index0 == 0 and system_message %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

TULU2 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TEMPLATES = {"llama2": LLAMA2, "tulu2": TULU2, "chatml": CHATML}


def resolve_template(name: str, tokenizer) -> str:
    """`auto` keeps the tokenizer's own template; a name picks one of ours."""
    if name == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if not own:
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path!r} has no chat template; set "
                f"model.chat_template to one of {sorted(TEMPLATES)}"
            )
        return own
    if name not in TEMPLATES:
        raise ValueError(f"model.chat_template: unknown template {name!r}; expected auto or one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
