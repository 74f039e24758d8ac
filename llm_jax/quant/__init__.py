"""Weight-only quantization: storage formats (`models/quant_formats.py`, part of the model), GPTQ (`gptq`) and the
`llm-jax quantize` command that writes a quantized work directory (`command`). docs/quantization.md."""
