"""Pruning (the guide's compression chapter): `llm-jax prune` writes a pruned work directory (`command.py`)."""
