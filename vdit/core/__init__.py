"""Lowest layer: user-error types and the owners of outside file formats (safetensors weights, Orbax checkpoints), logging and the command runner. Imports nothing else from vdit."""
