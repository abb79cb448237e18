"""Turning a question or a chat history into prompt token ids under a protocol."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from agent_runtime.functions import Function, builtin_functions
from agent_runtime.plain_text import encode_plain, render_template_ids
from agent_runtime.protocol import Protocol
from agent_runtime.tool_turns import function_prompt_ids

Message = Mapping[str, Any]


def protocol_messages(protocol: Protocol, messages: Sequence[Message], enabled_tools: Sequence[str]) -> list[dict]:
    """The protocol's system prompt first; a client's system message follows it in the same turn."""
    system = protocol.system_prompt(enabled_tools)
    out: list[dict] = []
    for m in messages:
        if m["role"] == "system":
            system = f"{system}\n\n{m['content']}"
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return [{"role": "system", "content": system}, *out]


def base_prompt_text(protocol: Protocol, messages: Sequence[Message], enabled_tools: Sequence[str]) -> str:
    """The plain-text variant for base models without a chat template."""
    lines = [protocol.system_prompt(enabled_tools), ""]
    for m in messages:
        if m["role"] == "system":
            lines.insert(1, m["content"])
        elif m["role"] == "user":
            lines.append(f"Question: {m['content']}")
        else:
            lines.append(f"Answer: {m['content']}")
    return "\n".join(lines) + "\n"


def build_prompt_ids(
    tokenizer: Any,
    protocol: Protocol,
    messages: Sequence[Message] | str,
    enabled_tools: Sequence[str] | None = None,
    functions: Sequence[Function] | None = None,
) -> list[int]:
    """Prompt ids for ``messages`` (or a single question), through the chat template when there is one.

    A function-calling protocol offers ``functions`` (default: the built-in ones of ``enabled_tools``)
    through the template, and needs one.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    tools = protocol.tool_names if enabled_tools is None else tuple(enabled_tools)
    if protocol.function_calling:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"the {protocol.name} protocol needs a model with a chat template")
        offered = builtin_functions(tools) if functions is None else functions
        return function_prompt_ids(tokenizer, messages, offered)
    if getattr(tokenizer, "chat_template", None):
        return render_prompt_ids(tokenizer, protocol_messages(protocol, messages, tools))
    return encode_plain(tokenizer, base_prompt_text(protocol, messages, tools), add_special_tokens=True)


def render_prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Ids of ``messages`` exactly as given (no protocol prompt added), ready for the assistant's turn.

    For prompts that already hold their instructions, such as TAPO's training rows. Without a chat
    template, the contents are joined by blank lines. Only the template makes special ids: a
    ``<|im_start|>`` inside a message stays text.
    """
    if not getattr(tokenizer, "chat_template", None):
        text = "\n\n".join(str(m["content"]) for m in messages) + "\n"
        return encode_plain(tokenizer, text, add_special_tokens=True)
    return render_template_ids(tokenizer, messages, add_generation_prompt=True)


def raw_prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of a prompt given as finished text (``/v1/completions``, a string prompt in training data):
    its special-token strings are meant (a pre-rendered template), and the tokenizer's own additions
    (a BOS token) are added, as TRL and vLLM tokenize such prompts."""
    return list(tokenizer.encode(text, add_special_tokens=True))


def encode_pieces(tokenizer: Any, prompt_ids: Sequence[int], pieces: Sequence[tuple[str, bool]],
                  eos_id: int) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a trajectory given as text pieces, tokenized as the loop does:
    each piece alone. ``pieces`` are ``(text, is_model_text)``; labels are -100 on the prompt and on
    injected text (tool output), so supervised training masks exactly what RL masks. The
    end-of-turn token closes the model's last turn and is learned.
    """
    ids, labels = list(prompt_ids), [-100] * len(prompt_ids)
    for text, is_model_text in pieces:
        piece_ids = encode_plain(tokenizer, text)  # as the loop encodes what it injects
        ids += piece_ids
        labels += piece_ids if is_model_text else [-100] * len(piece_ids)
    return ids + [eos_id], labels + [eos_id]
