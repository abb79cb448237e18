"""The reasoning–search–code loop shared by training rollouts and serving.

Knows nothing of HTTP or TRL: ``server`` and ``training`` import it, never each other.
"""

__version__ = "0.1.0"
