"""Training side of fm-runtime (PyTorch): data, paths, loss, training loop, reference sampler."""
