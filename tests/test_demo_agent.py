"""The demo agent, the default model: SmolLM2-135M-Instruct plus the committed LoRA adapter of `make
demo-model`, searching the demo encyclopedia by default. Runs the real model through `tapo run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from agent_runtime.models.resolve import DEMO_AGENT, PACKAGED_MODELS, demo_agent_dir, resolve_model
from agent_runtime.toolset import DEMO_SEARCH_INDEX, default_tools
from training.publish import PublishError, publish_adapter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smollm2_installed() -> None:
    try:
        PACKAGED_MODELS["smollm2-135m-instruct"].path()
    except ValueError as exc:
        pytest.skip(str(exc))


def _run(question: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "tapo_cli", "run", question, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_the_default_model_is_the_committed_adapter_on_the_packaged_base() -> None:
    path = Path(resolve_model(None))
    assert path == demo_agent_dir() == Path(resolve_model(DEMO_AGENT))
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"  # an alias: loads on any machine
    assert sum(f.stat().st_size for f in path.iterdir()) <= 20e6
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in load_file(path / "adapter_model.safetensors").items())


async def test_the_default_search_index_is_the_demo_encyclopedia() -> None:
    assert DEMO_SEARCH_INDEX == ROOT / "data" / "demo" / "index"
    tools = default_tools(code=False)
    assert tools.names == ("search",)
    result = await tools.call("search", "Sendgurt Ironworks founded")
    assert result.output.ok and "founded in 1908 by Dealla Traisdram" in result.output.text


def test_it_computes_with_the_code_tool(smollm2_installed) -> None:
    events = _run("What is 4821 * 37?")
    calls = [e for e in events if e["type"] == "tool_step" and e["status"] == "running"]
    assert calls and calls[0]["name"] == "code"
    assert events[-1]["final_answer"] == "178377"


def test_it_answers_a_greeting_in_plain_english_without_a_tool(smollm2_installed) -> None:
    events = _run("Hello! What can you do?")
    assert not [e for e in events if e["type"] == "tool_step"]
    answer = events[-1]["final_answer"]
    assert answer and len(answer.split()) >= 4 and answer.isascii()


def test_publish_keeps_config_and_float16_weights_and_refuses_a_local_base(tmp_path: Path) -> None:
    out = publish_adapter(demo_agent_dir(), tmp_path / "copy")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    weights = load_file(out / "adapter_model.safetensors")
    assert {str(v.dtype) for v in weights.values()} == {"torch.float16"}
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "some" / "base")
    (out / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(PublishError, match="local path"):
        publish_adapter(out, tmp_path / "again")
