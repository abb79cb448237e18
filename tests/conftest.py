import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as scripted_backend


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Servers the tests start (``tapo serve`` included) store responses in a temporary directory,
    never in the user's data directory."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TAPO_STATE_DIR", str(tmp_path_factory.mktemp("tapo-state")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_path(request: pytest.FixtureRequest) -> Path:
    """The trained tiny fixture model, built once per machine and cached. The first build takes minutes:
    its progress bar is shown, not captured."""
    from agent_runtime.models.tiny import tiny_model_path

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return tiny_model_path(progress=True)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation="sdpa").eval()


def require_llama_cpp():
    """The ``llama_cpp`` module, or a skip where the [llamacpp] extra is not installed. In CI (``CI``
    set), whose ``make setup`` installs the extra, a missing module fails instead."""
    import importlib.util
    import os

    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs llama-cpp-python (make setup installs the [llamacpp] extra)", pytrace=False)
        pytest.skip("llama-cpp-python is not installed (the [llamacpp] extra; make setup installs it)")
    import llama_cpp

    return llama_cpp
