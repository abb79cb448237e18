"""Stream one agent reply with the OpenAI SDK: thinking, each tool step as it starts and ends, then the answer.

    tapo serve &            # or tapo demo
    python clients/examples/stream_tool_steps.py "What is 4821 * 37?"

The server runs the tools; the stream carries them as extension fields of each delta: ``reasoning``
(with ``reasoning_part``: think, tool_call, tool_output or notice) and ``tool_step`` (sent when a call
starts, status "running", and again with the same id when it ends, status "done").
"""

import os
import sys

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("TAPO_BASE_URL", "http://127.0.0.1:8000/v1"),
                api_key=os.environ.get("TAPO_API_KEY", "no-key"))
question = sys.argv[1] if len(sys.argv) > 1 else "What is 4821 * 37?"
model = client.models.list().data[0].id

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": question}],
    stream=True,
    extra_body={"agent": {"max_tool_calls": 4}},  # the agent's options ride in the request body
)
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    extra = delta.model_extra or {}  # fields the SDK does not know: ours
    if extra.get("reasoning") and extra.get("reasoning_part") == "think":
        print(extra["reasoning"], end="", flush=True)
    step = extra.get("tool_step")
    if step and step["status"] == "running":
        print(f"\n[{step['name']}] {step['arguments'].strip()}", flush=True)
    elif step:
        print(f"[{step['name']} done in {step['seconds']:.3f}s, ok={step['ok']}]\n{step['output'].strip()}\n", flush=True)
    if delta.content:
        print(delta.content, end="", flush=True)
print()
