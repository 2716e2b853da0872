"""One run: the model, clips, data, the training loop, evaluation, runtime, loading."""
