"""One non-streaming request with the OpenAI SDK, reading everything the agent did.

    python clients/examples/non_streaming.py "What is 4821 * 37?"

``message.content`` is the answer; ``message.reasoning_content`` (also ``reasoning``) the thinking with
a trace of each tool call; ``message.tool_steps`` the tool steps; ``usage`` counts model tokens, with
the injected tool output apart (``usage.injected_tokens``). ``agent.tools`` turns tools off per request.
"""

import json
import os
import sys

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("TAPO_BASE_URL", "http://127.0.0.1:8000/v1"),
                api_key=os.environ.get("TAPO_API_KEY", "no-key"))
question = sys.argv[1] if len(sys.argv) > 1 else "What is 4821 * 37?"
reply = client.chat.completions.create(
    model=client.models.list().data[0].id,
    messages=[{"role": "user", "content": question}],
    temperature=0,
    extra_body={"agent": {"tools": True, "max_tool_calls": 4}},
)
choice = reply.choices[0]
extra = choice.message.model_extra or {}
print("reasoning:", extra.get("reasoning_content", "").strip(), sep="\n")
for step in extra.get("tool_steps", []):
    print(f"tool step {step['index']}: {step['name']} {json.dumps(step['arguments'])} -> {step['output'].strip()!r}")
print("answer:", choice.message.content)
print("finish:", choice.finish_reason, (choice.model_extra or {}).get("agent_finish_reason"))
print("usage:", reply.usage.completion_tokens, "model tokens,", (reply.usage.model_extra or {}).get("injected_tokens"),
      "injected")
