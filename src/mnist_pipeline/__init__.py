"""mnist-pipeline: a reproducible, tracked experiment pipeline for MNIST digit classification.

The top level holds the stage entry points (`python -m mnist_pipeline.<stage>`): prepare, train, evaluate,
report, search. The layers below them, and which may import which, are in docs/development.md.
"""
