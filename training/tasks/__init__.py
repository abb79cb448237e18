"""Synthetic tasks for the demo agent: arithmetic that needs the code tool, facts that need search over
a generated mini-encyclopedia, questions that need both, and direct questions that need no tool.

``python -m training.tasks --seed 0 --out data/demo`` writes ``{train,dev,test}.jsonl`` (task rows:
``{question, answer, data_source, extra_info: {id, split, template, entities, steps}}``), the
encyclopedia as ``corpus.jsonl`` with its bm25 ``index/``, ``manifest.json``, and
``train_trajectories.jsonl``: a gold trajectory per train row (trajectory-record schema), made by
replaying the row's plan against the real tools and kept only when judged correct.

The test split uses its own templates (wording and structure), its own fictional world and its own
pools of names, items, countries and terms: nothing of it appears in train or dev rows.
"""

from training.tasks.build import SIZES, SPLITS, DemoData, generate, templates_for, write_demo
from training.tasks.families import FAMILIES, TEMPLATES, Template
from training.tasks.reference import (
    Reference,
    RejectedReference,
    areference_trajectories,
    areference_trajectory,
    build_reference,
    demo_tools,
    judged_correct,
    reference_record,
    reference_trajectory,
    retrieval_misses,
)
from training.tasks.world import Encyclopedia, Passage, make_encyclopedia

__all__ = [
    "FAMILIES", "SIZES", "SPLITS", "TEMPLATES", "DemoData", "Encyclopedia", "Passage", "Reference",
    "RejectedReference", "Template", "areference_trajectories", "areference_trajectory", "build_reference",
    "demo_tools", "generate", "judged_correct", "make_encyclopedia", "reference_record", "reference_trajectory",
    "retrieval_misses", "templates_for", "write_demo",
]
