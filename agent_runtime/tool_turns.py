"""Chat-template rendering for function-calling protocols: the offered tools and each tool turn.

The model's chat template renders the tool list into the prompt and wraps tool results in its own
turn format. What the loop injects after a call is what the template adds when the tool messages
are appended: the conversation is rendered with and without them and the difference kept (verl's
tool agent loop does the same). The template's own text may hold special tokens; the tool output
inside it never does (it is encoded as plain text).

A tokenizer whose template knows nothing of tools gets :data:`DEFAULT_TOOL_TEMPLATE`, a ChatML
template in the Hermes format (``<tool_call>`` JSON ``</tool_call>``, results in
``<tool_response>`` blocks of a ``user`` turn), the format Qwen2.5 and Hermes models were trained on.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from agent_runtime.functions import Function
from agent_runtime.plain_text import encode_plain, render_template_ids

__all__ = ["DEFAULT_TOOL_TEMPLATE", "tool_chat_template", "function_prompt_ids", "ToolTurnRenderer"]

DEFAULT_TOOL_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Functions\\n\\nTo call a function, write its name and arguments as one JSON object between "
    "<tool_call> and </tool_call>:\\n<tool_call>\\n{\"name\": \"<function name>\", \"arguments\": "
    "{<arguments>}}\\n</tool_call>\\nYou may call several functions in one turn. Their results come back "
    "between <tool_response> and </tool_response>. When you know the answer, write it as plain text.\\n\\n"
    "The functions you can call, one JSON object a line:\\n<tools>\\n' }}"
    "{%- for tool in tools %}{{- (tool | tojson) + '\\n' }}{%- endfor %}"
    "{{- '</tools><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' + (message['content'] or '') }}"
    "{%- for call in message['tool_calls'] or [] %}"
    "{%- set f = call['function'] if call['function'] is defined else call %}"
    "{%- if message['content'] or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + f['name'] + '\", \"arguments\": ' }}"
    "{{- f['arguments'] if f['arguments'] is string else (f['arguments'] | tojson) }}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Stands in for tool output while the template renders; private-use characters no tool prints
# by accident (and if one does, the output is still encoded as plain text around them).
_SLOT = "\ue002{}\ue003"


def tool_chat_template(tokenizer: Any) -> str | None:
    """The template to render tools with: ``None`` (the tokenizer's own) when it renders tools."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and "tools" in own and "tool" in own.replace("tools", ""):
        return None
    return DEFAULT_TOOL_TEMPLATE


def function_prompt_ids(tokenizer: Any, messages: Sequence[Mapping[str, Any]], functions: Sequence[Function]) -> list[int]:
    """Prompt ids with ``functions`` offered through the chat template, ready for the assistant's turn.

    ``messages`` may hold earlier assistant ``tool_calls`` and ``tool`` results (OpenAI's shapes).
    """
    kwargs: dict[str, Any] = {"add_generation_prompt": True}
    if functions:
        kwargs["tools"] = [f.openai_schema() for f in functions]
    template = tool_chat_template(tokenizer)
    if template is not None:
        kwargs["chat_template"] = template
    return render_template_ids(tokenizer, messages, **kwargs)


class ToolTurnRenderer:
    """The ids injected after a turn of ``n`` calls: the end of the assistant turn, the tool turn
    with the results, and the next assistant turn's header. The template text of each ``n`` is
    rendered once."""

    def __init__(self, tokenizer: Any, end_of_turn: str) -> None:
        self.tokenizer = tokenizer
        self.end_of_turn = end_of_turn
        self.template = tool_chat_template(tokenizer)
        self._pieces: dict[int, list[str]] = {}

    def ids(self, results: Sequence[str]) -> list[int]:
        pieces = self._pieces.get(len(results))
        if pieces is None:
            pieces = self._pieces[len(results)] = self._render_pieces(len(results))
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2:  # a result slot
                ids += encode_plain(self.tokenizer, results[k // 2])
            elif piece:
                ids += self.tokenizer.encode(piece, add_special_tokens=False)
        return ids

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
        if self.template is not None:
            kwargs["chat_template"] = self.template
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def _render_pieces(self, n: int) -> list[str]:
        calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": {}}} for i in range(n)]
        before = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "", "tool_calls": calls}]
        results = [{"role": "tool", "tool_call_id": f"call_{i}", "name": "f", "content": _SLOT.format(i)} for i in range(n)]
        without = self._render(before, False)
        with_results = self._render(before + results, True)
        end = without.rfind(self.end_of_turn)
        if end < 0:
            raise ValueError(f"the chat template does not end an assistant turn with {self.end_of_turn!r}")
        end += len(self.end_of_turn)
        if not with_results.startswith(without[:end]):
            raise ValueError("the chat template renders the assistant's turn differently once tool results "
                             "follow it; the loop cannot continue from the model's own tokens")
        injected = with_results[end:]
        pieces: list[str] = []
        for i in range(n):
            slot = _SLOT.format(i)
            head, found, injected = injected.partition(slot)
            if not found:
                raise ValueError("the chat template does not render tool results")
            pieces += [head, slot]
        return pieces + [injected]
