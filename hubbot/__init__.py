"""hubbot: publish GGUF builds of a language model to a Hugging Face Hub repo."""

__version__ = "0.1.0"
