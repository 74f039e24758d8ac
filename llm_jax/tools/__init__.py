"""Tool use: tools declared as JSON schemas, executed on the model's calls, their results fed back until a final
answer (`loop.py`); a calculator and a corpus search over a RAG index (`builtin.py`); the calculator fine-tuning
recipe (`arith.py`); `llm-jax tools ...` (`command.py`). The model-facing protocol is `llm_jax/infer/toolcall.py`."""
