"""``python -m training.publish ADAPTER --out DIR``: a trained LoRA adapter made small enough to ship.

Keeps what loading needs (``adapter_config.json`` and the weights, stored in float16, half the size of
the float32 the trainer writes; merged into the float32 base at load the difference is below the
base's own GGUF quantization), drops the trainer's leftovers (tokenizer copies, ``training_args.bin``),
and checks that the base is named portably (an alias or a hub id, never a path of this machine).
``make demo-model`` publishes the demo agent into ``agent_runtime/models/demo_agent``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from agent_runtime.models.resolve import ADAPTER_CONFIG, is_adapter_dir
from training import configure_logging

WEIGHTS = "adapter_model.safetensors"


class PublishError(ValueError):
    pass


def publish_adapter(adapter: str | Path, out: str | Path) -> Path:
    """Write ``adapter`` to ``out`` (replacing what was there) in float16; returns ``out``."""
    import torch
    from safetensors.torch import load_file, save_file

    adapter, out = Path(adapter), Path(out)
    if not is_adapter_dir(adapter) or not (adapter / WEIGHTS).is_file():
        raise PublishError(f"{adapter}: not a LoRA adapter directory ({ADAPTER_CONFIG} and {WEIGHTS})")
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path") or ""
    if not base or base.startswith(("/", ".", "~")) or Path(base).is_absolute():
        raise PublishError(f"{adapter}: its base model {base!r} is a local path; train it from an alias "
                           "(smollm2-135m-instruct) or a hub id so that it loads elsewhere")
    weights = {k: v.to(torch.float16).contiguous() for k, v in load_file(adapter / WEIGHTS).items()}
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(weights, tmp / WEIGHTS, metadata={"format": "pt"})
    (tmp / WEIGHTS).chmod(0o644)
    keep = [p for p in out.iterdir() if p.suffix == ".md"] if out.is_dir() else []
    for doc in keep:  # the model card lives beside the weights and is written by hand
        shutil.copy2(doc, tmp / doc.name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.publish", description=__doc__.splitlines()[0])
    p.add_argument("adapter", type=Path, help="a LoRA adapter directory (e.g. OUTPUT/adapter of training.tapo)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    configure_logging(logging.getLogger("training.publish"), verbose=False)
    try:
        out = publish_adapter(args.adapter, args.out)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{out} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
