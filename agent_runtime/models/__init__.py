"""Model helpers; :mod:`agent_runtime.models.tiny` builds the tiny fixture model used by the tests."""
