"""BPartIS: Bayesian particle instance segmentation (network, loss, clustering, training, inference)."""
