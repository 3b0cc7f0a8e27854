"""CLIP (OpenAI's ViT CLIP as open_clip and transformers ship it): the two towers, the
tokenizer, the eval transform, loading every layout, and the `Clip` a user holds."""
