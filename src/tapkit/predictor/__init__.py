"""Prompt-driven prediction on one image at a time."""
