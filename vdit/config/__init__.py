"""The config boundary: experiment configs are read, validated and upgraded here; everything below receives plain typed values."""
