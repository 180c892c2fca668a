"""Inputs: storage access, datasets and partitioning into mini-batches."""
