"""Wan 2.1 (diffusers layout): DiT and VAE weight conversion, and a release folder turned into a vdit workdir."""
