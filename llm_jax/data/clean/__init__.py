"""Text filters of the data pipeline, each a pure function of one document (docs/data_filters.md).

- `pii`: email, phone, payment-card, IBAN and public IP address detection and redaction (`redact`).
- `toxicity`: a lexicon-based toxicity score (`toxicity`, `is_toxic`) with the shipped `data/toxic_words.txt`.
- `langid`: language identification (`identify`, `LanguageReport`), deterministic over `langdetect`.
- `quality`: a fastText-style hashed n-gram logistic-regression quality classifier and its offline recipe.
- `junk`: the synthetic low-quality text (shuffled, spam, boilerplate, noise, repetitive) that recipe trains on.
- `substring`: repeated-substring deduplication across documents (hashed word windows, after Lee et al. 2022).

Nothing heavy is imported here: import the module you need.
"""
