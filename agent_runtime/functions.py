"""Functions a model calls in a function-calling protocol: their schemas, and parsing its calls.

A :class:`Function` is what the model is offered (a name, a description, a JSON schema of its
arguments) plus where a call goes: a registry tool that runs it server-side (the built-in
``search`` and ``python``, an MCP tool), or nowhere, for the client's own functions, whose calls
go back to the client. Parsing a call is pure: text in, a :class:`FunctionCall` or a
:class:`CallError` out, whose message the model is shown in-band.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import jsonschema

from agent_runtime.protocol import Protocol


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON schema of the arguments object
    tool: str | None = None  # the registry tool that runs a call; None: the client's function, returned unrun
    # The parameter whose string value is the tool's one argument; None: all the arguments, as JSON.
    argument: str | None = None
    strict: bool = False

    @property
    def runs_here(self) -> bool:
        return self.tool is not None

    def openai_schema(self) -> dict[str, Any]:
        """As OpenAI's ``tools`` list holds it, which is also what chat templates render."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}}

    def tool_argument(self, arguments: Mapping[str, Any]) -> str:
        """The string handed to :attr:`tool`."""
        if self.argument is None:
            return json.dumps(arguments, ensure_ascii=False)
        return str(arguments[self.argument])


def _one_string(name: str, description: str) -> dict[str, Any]:
    return {"type": "object", "properties": {name: {"type": "string", "description": description}},
            "required": [name], "additionalProperties": False}


# The built-in tools as a function-calling model sees them, by registry tool name.
BUILTIN_FUNCTIONS: dict[str, Function] = {
    "search": Function(
        "search", "Search the web (or the configured corpus) and return the top passages with their titles.",
        _one_string("query", "What to look up, in a few words."), tool="search", argument="query"),
    "code": Function(
        "python", "Run Python 3 code in a sandbox without network access and return what it prints. "
        "Print every value you need to see.",
        _one_string("code", "The complete program."), tool="code", argument="code"),
}


def builtin_functions(tool_names: Sequence[str]) -> list[Function]:
    return [BUILTIN_FUNCTIONS[n] for n in tool_names if n in BUILTIN_FUNCTIONS]


class FunctionSchemaError(ValueError):
    """A function definition that cannot be offered (no name, a parameters schema that is not one)."""


def client_function(tool: Mapping[str, Any]) -> Function:
    """A client's function from one item of an OpenAI request's ``tools`` list."""
    if tool.get("type") != "function" or not isinstance(tool.get("function"), Mapping):
        raise FunctionSchemaError("only tools of type 'function' with a 'function' object are supported")
    spec = tool["function"]
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise FunctionSchemaError("a function needs a non-empty 'name'")
    parameters = spec.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise FunctionSchemaError(f"function {name!r}: 'parameters' must be a JSON schema object")
    try:
        jsonschema.validators.validator_for(parameters).check_schema(parameters)
    except jsonschema.SchemaError as exc:
        raise FunctionSchemaError(f"function {name!r}: 'parameters' is not a valid JSON schema: {exc.message}") from None
    return Function(name, str(spec.get("description") or ""), parameters, strict=bool(spec.get("strict")))


def offered_functions(builtin: Sequence[Function], extra: Sequence[Function]) -> list[Function]:
    """Built-in functions first, then the others; a clash of names is an error the caller reports."""
    seen: dict[str, Function] = {}
    for f in (*builtin, *extra):
        if f.name in seen:
            raise FunctionSchemaError(f"two functions are named {f.name!r}")
        seen[f.name] = f
    return list(seen.values())


@dataclass(frozen=True)
class FunctionCall:
    function: Function
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class CallError:
    name: str  # the function the model meant, where it could be read; "" otherwise
    message: str  # shown to the model as the call's result
    raw: str


def parse_call(text: str, functions: Mapping[str, Function]) -> FunctionCall | CallError:
    """One call, as the model wrote it between the call markers: ``{"name": …, "arguments": {…}}``.

    ``arguments`` may also be a JSON string holding the object (some models write it so). Unknown
    functions and arguments that fail the schema are errors, before anything runs.
    """
    raw = text.strip()
    try:
        call = json.loads(raw)
    except json.JSONDecodeError as exc:
        return CallError("", f"Error: the call is not valid JSON ({exc.msg} at character {exc.pos}). "
                             'Write {"name": ..., "arguments": {...}}.', raw)
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return CallError("", 'Error: a call must be a JSON object {"name": ..., "arguments": {...}}.', raw)
    name = call["name"]
    function = functions.get(name)
    if function is None:
        available = ", ".join(functions) or "none"
        return CallError(name, f"Error: there is no function named {name!r}. Available: {available}.", raw)
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return CallError(name, f"Error: the arguments of {name} are not a JSON object.", raw)
    if not isinstance(arguments, dict):
        return CallError(name, f"Error: the arguments of {name} must be a JSON object.", raw)
    error = jsonschema.validators.validator_for(function.parameters)(function.parameters).iter_errors(arguments)
    first = next(iter(sorted(error, key=lambda e: list(e.path))), None)
    if first is not None:
        where = "/".join(map(str, first.path))
        return CallError(name, f"Error: invalid arguments for {name}{' at ' + where if where else ''}: {first.message}.", raw)
    return FunctionCall(function, arguments)


@dataclass(frozen=True)
class ForcedCall:
    """How a turn is made to call one of several functions (``tool_choice`` ``required``, or a named
    function): ``opening`` is written, then the model chooses one of ``heads`` (each token where they
    differ sampled among their next tokens, the rest written), then writes that function's arguments
    under its JSON schema (``schemas``, same order) and ``closing``; then it goes on freely."""

    opening: str
    heads: tuple[str, ...]
    schemas: tuple[Mapping[str, Any], ...]
    closing: str


def _call_head(function: Function) -> str:
    """A call of ``function`` up to its arguments. No space after the colon: tokenizers merge it into
    the next token (' {"'), so text that ended with it would leave the model to continue from a token
    it never saw there; the arguments' grammar allows it."""
    return '{"name": ' + json.dumps(function.name, ensure_ascii=False) + ', "arguments":'


def forced_call(protocol: Protocol, functions: Sequence[Function]) -> ForcedCall:
    """The :class:`ForcedCall` of one of ``functions`` in ``protocol``'s call block."""
    block = protocol.call_block
    return ForcedCall(f"{block.open}\n", tuple(_call_head(f) for f in functions),
                      tuple(f.parameters for f in functions), f"}}\n{block.close}")
