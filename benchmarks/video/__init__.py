"""Video fingerprinting benchmark: ``python -m benchmarks.video.run [--quick]``."""
