"""`llm-jax data prepare --engine beam`: data preparation as Apache Beam pipelines (pipeline.py), over work units
(units.py), with per-unit and per-partition work (stages.py) deciding by sorts over numpy batches (keys.py)."""
