"""Prompts to text conditioning: the shipped and sentencepiece tokenizers, the T5/umT5 encoder and its weights, the conditioner per config, and prompt expansion."""
