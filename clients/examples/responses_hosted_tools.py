"""The Responses API with the server's hosted tools, streamed with the OpenAI SDK.

    python clients/examples/responses_hosted_tools.py "What is 4821 * 37?"

``tools`` turns on what the server runs itself: ``code_interpreter`` (the sandbox) and ``web_search``
(the configured search backend). Each step the agent takes is one output item: ``reasoning``, then a
``code_interpreter_call`` with its code and logs or a ``web_search_call`` with its query, and the
answer is the ``message`` (``response.output_text``).
"""

import os
import sys

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("TAPO_BASE_URL", "http://127.0.0.1:8000/v1"),
                api_key=os.environ.get("TAPO_API_KEY", "no-key"))
question = sys.argv[1] if len(sys.argv) > 1 else "What is 4821 * 37?"
with client.responses.stream(
    model=client.models.list().data[0].id,
    input=question,
    tools=[{"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "web_search"}],
    temperature=0,
) as stream:
    for event in stream:
        if event.type == "response.output_item.done":
            item = event.item
            if item.type == "code_interpreter_call":
                logs = "".join(o.logs for o in item.outputs or [] if o.type == "logs")
                print(f"[code] {item.code.strip()} -> {logs.strip()!r}")
            elif item.type == "web_search_call":
                print(f"[search] {item.action.query}")
    response = stream.get_final_response()
print("answer:", response.output_text)
print("status:", response.status, "| usage:", response.usage.output_tokens, "output tokens,",
      response.usage.output_tokens_details.reasoning_tokens, "of them reasoning")
