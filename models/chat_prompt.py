"""Rendering a model's own chat template without transformers.

The CT2 model directory carries the tokenizer files saved at conversion time. The chat template is read
from ``tokenizer_config.json`` (``chat_template``) or, as transformers 5 saves it, ``chat_template.jinja``,
and rendered with a sandboxed jinja2 environment set up the way transformers sets up its own, so the
prompt is byte-identical to ``tokenizer.apply_chat_template``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = Mapping[str, str]
"""A chat message: ``{"role": "system"|"user"|"assistant", "content": "..."}``."""


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Same defaults as transformers' filter (jinja's own escapes HTML, which would alter prompts).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _token_text(value: Any) -> str | None:
    """Special tokens are saved either as strings or as ``{"content": ...}`` objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


class ChatPrompt:
    """A model's chat template plus the special tokens it refers to.

    Args:
        model_dir: Directory with ``tokenizer_config.json`` and optionally ``chat_template.jinja``,
            ``special_tokens_map.json``.

    Raises:
        FileNotFoundError: The directory has no chat template.
    """

    def __init__(self, model_dir: Path) -> None:
        config = _read_json(model_dir / "tokenizer_config.json")
        special = _read_json(model_dir / "special_tokens_map.json")
        template = config.get("chat_template")
        if isinstance(template, list):  # several named templates: the default one is used for chat
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if not isinstance(template, str) and (model_dir / "chat_template.jinja").is_file():
            template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
        if not isinstance(template, str):
            raise FileNotFoundError(f"{model_dir} has no chat template (tokenizer_config.json or chat_template.jinja)")
        self.tokens: dict[str, str] = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            text = _token_text(config.get(key)) or _token_text(special.get(key))
            if text is not None:
                self.tokens[key] = text
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(template)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``, ending with the assistant header when asked."""
        return self._template.render(
            messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **self.tokens
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}
