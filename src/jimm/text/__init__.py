"""Text tokenizers for the CLIP, SigLIP and SigLIP 2 text towers, equal to transformers' on the same files."""

from .tokenizer import Tokenizer

__all__ = ["Tokenizer"]
