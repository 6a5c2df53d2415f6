"""Optuna: the search space, opening a shared study, pruning a training, and the best trial as a preset."""
