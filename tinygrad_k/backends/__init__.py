"""``torch.backends``: the flags scripts set, as plain module attributes.

(Not to be confused with ``tinygrad_k.backend``, the device backends.) The flags are
read where they matter: ``backends.cuda.matmul.allow_tf32`` picks the TF32 GEMM on the
GPU. ``cudnn.deterministic`` / ``benchmark`` are accepted and have no effect: our kernels
are deterministic and there is no cuDNN autotuner.
"""
from . import cuda, cudnn, mps

__all__ = ["cuda", "cudnn", "mps"]
