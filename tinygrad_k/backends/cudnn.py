"""``torch.backends.cudnn`` flags: accepted, no effect (no cuDNN; our kernels are
deterministic and not autotuned)."""
enabled = True
deterministic = False
benchmark = False
allow_tf32 = True


def is_available():
    """False: tinygrad_k's convolutions are its own kernels, not cuDNN's."""
    return False


def version():
    return None
