"""Video and image files: reading and writing (the only PyAV/Pillow importers), the uint8 pixel codec, provenance tags and the invisible watermark."""
