"""Training: TAPO (DAPO adapted to tool calls) on TRL's GRPOTrainer, with rollouts from agent_runtime."""

import os

# rollout_func is the TRL path we build on (TRL pinned); its "experimental" warning is noise to users.
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
