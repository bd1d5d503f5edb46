"""Benchmarks: tinygrad_k side by side with NumPy, PyTorch, cuBLAS and cuDNN (see run.py)."""
