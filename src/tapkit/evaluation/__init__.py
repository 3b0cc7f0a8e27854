"""Benchmarks of the paper, scored with the standard tools.

One module per benchmark (`caption`, `classify`, `segment`), metric wrappers
(`caption_metrics`, `detection_metrics`), and the shared machinery: reading
COCO-style data (`data`), what a run needs (`setup`), box/click prompts in
batches (`prompting`), sharding across torchrun ranks with resumable per-rank
prediction files (`store`, `runner`; ranks from `tapkit.runtime`) and the JSON report
(`report`)."""
