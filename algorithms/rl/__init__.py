"""RL for LLM reasoning: GRPO, DAPO dynamic sampling, GRESO selective rollout."""
