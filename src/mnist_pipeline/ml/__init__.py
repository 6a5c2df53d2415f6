"""The Keras side: models and their layers, augmentation, the training loop's pieces, resume snapshots.
No MLflow and no files of the pipeline's own layout: the train stage wires these to tracking."""
