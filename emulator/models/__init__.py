"""Bundled trained models (weights in .npz, a model card per model, the script that
trains them)."""
