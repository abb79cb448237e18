"""Training: TAPO (DAPO adapted to tool calls) on TRL's GRPOTrainer, with rollouts from agent_runtime."""
