"""``torch.backends.cuda``: ``matmul.allow_tf32`` (False by default, as torch) lets the GPU
matmul use TF32 tensor cores."""


class _MatmulFlags:
    """``backends.cuda.matmul``: a plain attribute holder, read at each GPU matmul."""

    allow_tf32 = False
    allow_fp16_reduced_precision_reduction = False
    allow_bf16_reduced_precision_reduction = False


matmul = _MatmulFlags()


def is_built():
    from ..backend import cuda_available

    return cuda_available()
