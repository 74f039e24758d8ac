"""Retrieval-augmented generation: corpus chunks (`chunk`), embeddings from any work directory's model (`embed`; a
Hugging Face BERT sentence encoder as a work directory: `encoder`), faiss indexes (`index`), retrieval + cited
prompts + generation (`ask`), the shipped Shakespeare question set (`questions`) and `llm-jax rag` (`command`).
docs/rag.md."""
