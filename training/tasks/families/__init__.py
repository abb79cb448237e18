"""Question templates of the four demo families, each with the plan of its gold trajectory.

One module per family (:mod:`.arith`, :mod:`.search`, :mod:`.twohop`, :mod:`.direct`); the shared
types and step helpers are in :mod:`.base`, the name and fact pools in :mod:`.pools`.
"""

from training.tasks.families.arith import ARITH_TEMPLATES
from training.tasks.families.base import (
    ARITH,
    DIRECT,
    FAMILIES,
    SEARCH,
    TWOHOP,
    Context,
    Draft,
    Pools,
    Step,
    Template,
)
from training.tasks.families.direct import DIRECT_TEMPLATES
from training.tasks.families.pools import make_pools
from training.tasks.families.search import SEARCH_TEMPLATES
from training.tasks.families.twohop import TWOHOP_TEMPLATES

TEMPLATES: tuple[Template, ...] = ARITH_TEMPLATES + SEARCH_TEMPLATES + TWOHOP_TEMPLATES + DIRECT_TEMPLATES

__all__ = [
    "ARITH", "ARITH_TEMPLATES", "DIRECT", "DIRECT_TEMPLATES", "FAMILIES", "SEARCH", "SEARCH_TEMPLATES", "TEMPLATES",
    "TWOHOP", "TWOHOP_TEMPLATES", "Context", "Draft", "Pools", "Step", "Template", "make_pools",
]
