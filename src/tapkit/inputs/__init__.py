"""The input layer, below every model family: reading images, the labelled-point form
of visual prompts and its one label table. Models, the predictor, automatic mode,
training and evaluation import it; it imports no model."""
