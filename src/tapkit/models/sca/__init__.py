"""Segment and Caption Anything (SCA): a frozen promptable segmenter (SAM, or TAP),
a light query-based text feature mixer, and a frozen causal language model.

Importing this package does not import transformers; building a model does."""
