"""compbias: measure whether compressing an instruction-tuned LLM creates social bias."""

__version__ = "0.1.0"
