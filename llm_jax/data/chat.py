"""Chat templates: how a list of messages becomes the prompt a chat model was trained on.

A work directory may carry the model's template as `chat_template.jinja` (what transformers writes; `convert
from-hf` copies it, `convert from-gguf` writes the GGUF's `tokenizer.chat_template`) or inside
`tokenizer_config.json` (older transformers). It is rendered like transformers' `apply_chat_template`: Jinja in a
sandbox (a template is data from a checkpoint, not trusted code), with `messages`, `add_generation_prompt=True`,
`bos_token` / `eos_token` and `raise_exception`. Without a template, a plain one is used:
"role: content" lines, then "assistant:".
"""

from __future__ import annotations

import json
import os
import shutil

from llm_jax.errors import UserError

CHAT_TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
PLAIN_TEMPLATE = ("{% if tools %}tools:{% for t in tools %} {{ t.function.name }}("
                  "{% for k, v in (t.function.parameters.properties or {}).items() %}{{ k }}: {{ v.type }}"
                  "{% if not loop.last %}, {% endif %}{% endfor %}){% endfor %}{{ '\\n' }}{% endif %}"
                  "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}assistant:{% endif %}")
ROLES = ("system", "user", "assistant", "tool", "developer")


def copy_tokenizer_extras(src_dir: str, out: str) -> list[str]:
    """Copies the chat template and tokenizer_config.json (special-token names) from a Hugging Face-style
    directory into a work directory; returns the names copied."""
    copied = []
    for name in (CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE):
        if os.path.isfile(os.path.join(src_dir, name)):
            shutil.copyfile(os.path.join(src_dir, name), os.path.join(out, name))
            copied.append(name)
    return copied


def load_chat_template(workdir: str) -> str | None:
    path = os.path.join(workdir, CHAT_TEMPLATE_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    path = os.path.join(workdir, TOKENIZER_CONFIG_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            template = json.load(f).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def _raise(message):
    raise UserError(f"the chat template refused the messages: {message}")


def render(template: str | None, messages: list[dict], bos_token: str = "", eos_token: str = "",
           add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
    """The prompt text for `messages` ([{"role", "content"}]), ending where the assistant's reply begins (or, with
    add_generation_prompt=False, where the last message ends: what fine-tuning renders). `tools` (OpenAI function
    specs) reach the template as `tools`, as in transformers; the plain template lists them on one line, compactly
    for small contexts: "tools: calculator(expression: string)"."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UserError(f"messages[{i}] needs a role ({', '.join(ROLES)}) and a string content")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        compiled = env.from_string(template or PLAIN_TEMPLATE)
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                               eos_token=eos_token, raise_exception=_raise, tools=tools or None)
    except jinja2.TemplateError as e:
        raise UserError(f"the model's chat template cannot render these messages: {e}") from e


def reply_lead(template: str | None, bos_token: str = "", eos_token: str = "") -> str:
    """What the template writes between the generation prompt and a reply's text (the plain template: one space)."""
    probe = [{"role": "user", "content": "?"}]
    prompt = render(template, probe, bos_token, eos_token)
    full = render(template, probe + [{"role": "assistant", "content": "\x00"}], bos_token, eos_token,
                  add_generation_prompt=False)
    if not full.startswith(prompt) or "\x00" not in full[len(prompt):]:
        return ""
    return full[len(prompt):full.index("\x00", len(prompt))]
