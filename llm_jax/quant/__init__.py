"""Weight-only quantization: storage formats (`formats`, imported by the model), GPTQ (`gptq`) and the
`llm-jax quantize` command that writes a quantized work directory (`command`). docs/quantization.md."""
