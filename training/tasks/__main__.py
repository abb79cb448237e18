"""``python -m training.tasks --seed 0 --out data/demo``: write the demo agent's tasks, corpus, index
and gold train trajectories. Shows progress bars; prints one summary line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from training.tasks.build import INDEX_DIR, MANIFEST_FILE, TRAJECTORIES_FILE, write_demo
from training.tasks.reference import areference_trajectories, demo_tools, reference_record, retrieval_misses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.tasks", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="everything written is a function of it (default: 0)")
    p.add_argument("--out", type=Path, default=Path("data/demo"), help="output directory (default: %(default)s)")
    p.add_argument("--code-tool", choices=("sandbox", "inprocess"), default="sandbox",
                   help="run the plans' code in the bubblewrap sandbox (default) or in this process")
    p.add_argument("--no-trajectories", action="store_true", help="skip the gold train trajectories")
    p.add_argument("--tokenizer", help="fill the records' token ids with this model's tokenizer (a --model name)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


async def _trajectories(rows: list[dict], index: Path, code_tool: str, progress: bool) -> tuple[list, list]:
    tools = demo_tools(index, code=code_tool)
    await tools.astart()
    try:
        return await areference_trajectories(rows, tools, progress=progress)
    finally:
        await tools.aclose()


def _tokenizer(name: str):  # noqa: ANN202
    from transformers import AutoTokenizer

    from agent_runtime.models.resolve import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(name))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    progress = not args.quiet
    try:
        data = write_demo(args.out, args.seed, progress=progress)
    except OSError as e:
        print(f"error: cannot write to {args.out}: {e}", file=sys.stderr)
        return 2
    from agent_runtime.search.bm25 import Bm25Backend

    backend = Bm25Backend.load(args.out / INDEX_DIR, engine="numpy")
    misses = [m for rows in data.rows.values() for m in retrieval_misses(rows, backend)]
    if misses:
        print(f"error: {len(misses)} search steps miss their passage in the top 3, e.g. {misses[:3]}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{s} {len(r)}" for s, r in data.rows.items())
    summary = f"wrote {args.out}: {summary} rows; {len(data.corpus)} passages"
    if not args.no_trajectories:
        try:
            refs, reasons = asyncio.run(_trajectories(data.rows["train"], args.out / INDEX_DIR, args.code_tool,
                                                      progress))
        except ValueError as e:  # no usable sandbox
            print(f"error: {e}\n(--code-tool inprocess runs the generated code without the sandbox)", file=sys.stderr)
            return 2
        tokenizer = _tokenizer(args.tokenizer) if args.tokenizer else None
        records = [reference_record(r, tokenizer=tokenizer) for r in refs if r is not None]
        from agent_runtime.records import write_records

        write_records(args.out / TRAJECTORIES_FILE, records)
        rejected = Counter(r for r in reasons if r is not None)
        manifest_path = args.out / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text())
        manifest["trajectories"] = {"file": TRAJECTORIES_FILE, "kept": len(records), "rows": len(refs),
                                    "code_tool": args.code_tool, "tokenizer": args.tokenizer}
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        summary += f"; {len(records)}/{len(refs)} gold train trajectories"
        if rejected:
            print(f"warning: {sum(rejected.values())} train rows got no gold trajectory: "
                  f"{rejected.most_common(3)}", file=sys.stderr)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
