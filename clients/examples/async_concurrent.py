"""Ask several questions at once with the async OpenAI SDK; print each answer and the tools it used.

    python clients/examples/async_concurrent.py

The server runs each agent loop concurrently (up to its --max-concurrency; more get a 503).
"""

import asyncio
import os

from openai import AsyncOpenAI

QUESTIONS = ["What is 4821 * 37?", "What is 17 squared?", "Hello! What can you do?"]


async def ask(client: AsyncOpenAI, model: str, question: str) -> str:
    reply = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
    message = reply.choices[0].message
    steps = (message.model_extra or {}).get("tool_steps", [])  # the finished tool steps
    tools = ", ".join(f"{s['name']}({s['arguments'].strip()!r})" for s in steps) or "no tool"
    return f"{question}\n  tools: {tools}\n  answer: {message.content}"


async def main() -> None:
    client = AsyncOpenAI(base_url=os.environ.get("TAPO_BASE_URL", "http://127.0.0.1:8000/v1"),
                         api_key=os.environ.get("TAPO_API_KEY", "no-key"))
    model = (await client.models.list()).data[0].id
    for line in await asyncio.gather(*(ask(client, model, q) for q in QUESTIONS)):
        print(line)
    await client.close()


asyncio.run(main())
