"""Tag protocols: which blocks a model writes, how tool output is injected, the system prompt.

Three protocols ship so that checkpoints of the published systems serve as they were trained:
``tapo`` (the default), ``search-r1`` and ``torl``. A protocol is plain data plus a few pure
functions; the incremental parser (:mod:`agent_runtime.parser`) and the loop read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterable, Literal, Sequence


class BlockRole(StrEnum):
    REASONING = "reasoning"
    TOOL = "tool"
    ANSWER = "answer"
    OBSERVATION = "observation"


@dataclass(frozen=True)
class Block:
    """One kind of tagged span: ``open`` … ``close``; ``name`` is the tool name for tool blocks."""

    name: str
    open: str
    close: str
    role: BlockRole
    # The backend stop string for a tool block, when the close marker cannot be one: ToRL's
    # closing fence "```" is also the start of its opening fence, so it stops on "```output".
    # The loop still ends the turn where the parser sees the block close.
    stop: str | None = None


PromptVariant = Literal["chat", "base"]


@dataclass(frozen=True)
class Protocol:
    name: str
    blocks: tuple[Block, ...]
    observation_template: str  # ``{output}`` is replaced by the tool's text
    boxed_answer: bool = False  # ToRL: the answer is the last ``\boxed{…}`` of the text
    # Function calling (``hermes``): the model calls named functions with JSON arguments inside its
    # one tool block, may call several in a turn and ends the turn itself; the chat template renders
    # the offered functions and the results (:mod:`agent_runtime.tool_turns`); the answer is the
    # plain text of the last turn. ``function_tools`` are the built-in tools it is offered.
    function_calling: bool = False
    function_tools: tuple[str, ...] = ()

    @property
    def tool_names(self) -> tuple[str, ...]:
        """The built-in tools (registry names) this protocol can call."""
        if self.function_calling:
            return self.function_tools
        return tuple(b.name for b in self.blocks if b.role is BlockRole.TOOL)

    @property
    def call_block(self) -> Block | None:
        """The block a function-calling protocol's calls are written in."""
        if not self.function_calling:
            return None
        return next(b for b in self.blocks if b.role is BlockRole.TOOL)

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"protocol {self.name!r} has no block {name!r}")

    def stop_strings(self, enabled_tools: Iterable[str]) -> tuple[str, ...]:
        """Strings that end a generation turn: the closing tags of the enabled tool blocks only.

        The answer turn ends at the model's end-of-turn token, never at ``</answer>``, so that the
        completion ends with EOS (TRL treats a completion without EOS as truncated).
        """
        enabled = set(enabled_tools)
        return tuple(
            dict.fromkeys(b.stop or b.close for b in self.blocks if b.role is BlockRole.TOOL and b.name in enabled)
        )

    def format_observation(self, output: str) -> str:
        return self.observation_template.replace("{output}", output.strip())

    def invalid_action_message(self, enabled_tools: Sequence[str]) -> str:
        """Injected in-band after a malformed turn, as TAPO does, so that the model may try again."""
        if self.function_calling:
            raise ValueError("a function-calling protocol answers a malformed call as the call's result")
        parts = ["\nMy previous action is invalid."]
        for name in enabled_tools:
            b = self.block(name)
            what = "search" if name == "search" else "run code"
            parts.append(f"If I want to {what}, I should put it between {b.open} and {b.close}.")
        if self.boxed_answer:
            parts.append("If I want to give the final answer, I should write it as \\boxed{answer}.")
        else:
            a = self.block("answer")
            parts.append(f"If I want to give the final answer, I should put it between {a.open} and {a.close}.")
        return " ".join(parts) + " Let me try again.\n"

    def tool_budget_message(self, name: str) -> str:
        """Tool output once the tool-call budget is spent (the final turn runs with tools disabled)."""
        return self.format_observation(f"[Failed] The limit of tool calls is reached; {name} was not run.")

    def system_prompt(self, enabled_tools: Sequence[str]) -> str:
        return _SYSTEM_PROMPTS[self.name](tuple(t for t in self.tool_names if t in enabled_tools))

    def extract_answer(self, text: str) -> str | None:
        """The final answer in a completion's text (model text only), or ``None``."""
        if self.boxed_answer:
            return last_boxed(text)
        if self.function_calling:
            call = self.call_block
            last = text.rsplit(call.close, 1)[-1] if call.close in text else text
            last = re.sub(r"<think>.*?</think>", "", last, flags=re.DOTALL)
            return last.strip() or None
        a = self.block("answer")
        matches = re.findall(re.escape(a.open) + r"(.*?)" + re.escape(a.close), text, flags=re.DOTALL)
        return matches[-1].strip() if matches else None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` in ``text``, with nested braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def _tapo_prompt(tools: tuple[str, ...]) -> str:
    # Follows the structure of the published TAPO prompt: numbered rules for each enabled tool,
    # then one worked example in exactly the format the model must produce.
    steps = ["Reason step by step inside <think> and </think>. Say what you still need to find out."]
    if "search" in tools:
        steps.append("To look something up, write a query inside <search> and </search>. "
                     "The results come back inside <response> and </response>.")
    if "code" in tools:
        steps.append("To calculate, write Python inside <code> and </code> and print the result. "
                     "Its output comes back inside <response> and </response>.")
    steps.append("Give the final answer inside <answer> and </answer>, with no explanation.")
    rules = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    example = ["Example:", "Question: How many days passed between the opening of the Harbor Bridge and its "
               "first repair? (the two dates are needed)"]
    if "search" in tools:
        example += ["<think>I need both dates, then the difference in days.</think>",
                    "<search>Harbor Bridge opening date</search>",
                    "<response>(Title: Harbor Bridge) The bridge opened on 3 May 1931 ...</response>",
                    "<search>Harbor Bridge first repair</search>",
                    "<response>(Title: Harbor Bridge repairs) The first repair began on 9 June 1934 ...</response>"]
    else:
        example += ["<think>The bridge opened on 3 May 1931 and was first repaired on 9 June 1934; "
                    "I need the difference in days.</think>"]
    if "code" in tools:
        example += ["<code>", "from datetime import date", "print((date(1934, 6, 9) - date(1931, 5, 3)).days)",
                    "</code>", "<response>1133</response>"]
    else:
        example += ["<think>From 3 May 1931 to 9 June 1934 is 1133 days.</think>"]
    example.append("<answer>1133</answer>")
    return ("You are a careful reasoning assistant that uses tools. Follow these rules:\n"
            f"{rules}\n" + "\n".join(example))


def _search_r1_prompt(tools: tuple[str, ...]) -> str:
    text = ("Answer the question. Reason inside <think> and </think> first, every time you get new "
            "information.")
    if "search" in tools:
        text += (" If you lack knowledge, search by writing <search> query </search>; the top results "
                 "come back between <information> and </information>. Search as often as you need.")
    return text + " When you know the answer, write it inside <answer> and </answer>, without explanation."


def _torl_prompt(tools: tuple[str, ...]) -> str:
    text = "Solve the problem step by step."
    if "code" in tools:
        text += (" You may write Python in a ```python code block; it is run and its output follows in an "
                 "```output block.")
    return text + " Put the final answer in \\boxed{}."


def _hermes_prompt(tools: tuple[str, ...]) -> str:
    return ""  # the chat template renders the offered functions into the system turn


_SYSTEM_PROMPTS = {"tapo": _tapo_prompt, "search-r1": _search_r1_prompt, "torl": _torl_prompt,
                   "hermes": _hermes_prompt}

TAPO = Protocol(
    name="tapo",
    blocks=(
        Block("think", "<think>", "</think>", BlockRole.REASONING),
        Block("search", "<search>", "</search>", BlockRole.TOOL),
        Block("code", "<code>", "</code>", BlockRole.TOOL),
        Block("answer", "<answer>", "</answer>", BlockRole.ANSWER),
        Block("response", "<response>", "</response>", BlockRole.OBSERVATION),
    ),
    observation_template="\n\n<response>{output}</response>\n\n",
)

SEARCH_R1 = Protocol(
    name="search-r1",
    blocks=(
        Block("think", "<think>", "</think>", BlockRole.REASONING),
        Block("search", "<search>", "</search>", BlockRole.TOOL),
        Block("answer", "<answer>", "</answer>", BlockRole.ANSWER),
        Block("information", "<information>", "</information>", BlockRole.OBSERVATION),
    ),
    observation_template="\n\n<information>{output}</information>\n\n",
)

TORL = Protocol(
    name="torl",
    blocks=(
        Block("code", "```python", "```", BlockRole.TOOL, stop="```output"),
        Block("output", "```output", "```", BlockRole.OBSERVATION),
    ),
    observation_template="\n```output\n{output}\n```\n",
    boxed_answer=True,
)

# The function-calling format of Qwen2.5/Qwen3 and Hermes models: ``<tool_call>{"name": …,
# "arguments": {…}}</tool_call>``, the results in the template's tool turn.
HERMES = Protocol(
    name="hermes",
    blocks=(
        Block("think", "<think>", "</think>", BlockRole.REASONING),
        Block("tool_call", "<tool_call>", "</tool_call>", BlockRole.TOOL),
    ),
    observation_template="{output}",
    function_calling=True,
    function_tools=("search", "code"),
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (TAPO, SEARCH_R1, TORL, HERMES)}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None
