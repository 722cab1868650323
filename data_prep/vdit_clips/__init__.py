"""TFDS dataset `vdit_clips`: a prepared vdit dataset folder as a TensorFlow Datasets dataset.

Importing this package registers the builder with TFDS; see vdit_clips_dataset_builder for how to
build and read it.
"""
from data_prep.vdit_clips.vdit_clips_dataset_builder import VditClips

__all__ = ["VditClips"]
