"""Training data on disk and in flight: the clip and cached-latent records, the dataset layout, bucket plans and the Grain pipeline (the only Grain importer)."""
