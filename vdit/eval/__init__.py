"""Evaluation: feature networks (toy encoder, I3D), metrics (FVD/FID/KID, alignment, judges, validation loss), the evaluator and its report, plots and gallery."""
