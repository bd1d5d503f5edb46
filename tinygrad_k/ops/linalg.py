"""Matrix products: ``torch.matmul`` semantics on top of the ``kernels.matmul`` primitive."""
from __future__ import annotations

from ..autograd import Function, unbroadcast


def _check_matmul(a_shape, b_shape, op="matmul"):
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise RuntimeError(f"{op}: both arguments need at least 1 dimension, got shapes "
                           f"{tuple(a_shape)} and {tuple(b_shape)}")
    k_a = a_shape[-1]
    k_b = b_shape[0] if len(b_shape) == 1 else b_shape[-2]
    if k_a != k_b:
        raise ValueError(
            f"{op}: shapes {tuple(a_shape)} and {tuple(b_shape)} cannot be multiplied: "
            f"expected a.shape[-1] == b.shape[{'0' if len(b_shape) == 1 else '-2'}], "
            f"got {k_a} and {k_b}")


class MatMul(Function):
    """y = a @ b like torch.matmul: 1-D operands are promoted (a: (K,) -> (1,K), b: (K,) ->
    (K,1)) and the added axis removed afterwards; leading (batch) axes broadcast.

    For A (..., M, K), B (..., K, N), G = dL/dY (..., M, N):
        dA = G B^T,   dB = A^T G   (each summed over the batch axes its operand broadcast in).
    Both products use the transposed forms of ``kernels.matmul``: no transposed copies.
    """

    node_name = "MmBackward0"

    @staticmethod
    def forward(ctx, a, b):
        _check_matmul(a.shape, b.shape)
        xp = ctx.xp
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        batch = tuple(xp.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])) if (
            a2.ndim > 2 or b2.ndim > 2) else ()
        m, k = a2.shape[-2:]
        n = b2.shape[-1]
        mm = ctx.kernels.matmul if a.dtype.kind == "f" and a.dtype == b.dtype else _xp_matmul(xp)
        if batch:
            A = xp.broadcast_to(a2, batch + (m, k)).reshape(-1, m, k)
            B = xp.broadcast_to(b2, batch + (k, n)).reshape(-1, k, n)
            y = mm(A, B).reshape(batch + (m, n))
        else:
            A, B = a2, b2
            y = mm(A, B)
        ctx.save_for_backward(A, B)
        ctx.meta = (a.shape, b.shape, a2.shape, b2.shape, batch, (m, k, n))
        if a.ndim == 1:
            y = y[..., 0, :]
        if b.ndim == 1:
            y = y[..., 0]
        return y

    @staticmethod
    def backward(ctx, g):
        A, B = ctx.saved_tensors
        a_shape, b_shape, a2_shape, b2_shape, batch, (m, k, n) = ctx.meta
        if len(a_shape) == 1:
            g = g[..., None, :]
        if len(b_shape) == 1:
            g = g[..., None]
        mm = ctx.kernels.matmul if g.dtype.kind == "f" else _xp_matmul(ctx.xp)
        G = g.reshape(-1, m, n) if batch else g
        da = db = None
        if ctx.needs_input_grad[0]:
            da = mm(G, B, trans_b=True)
            if batch:
                da = unbroadcast(da.reshape(batch + (m, k)), a2_shape)
            da = da.reshape(a_shape)
        if ctx.needs_input_grad[1]:
            db = mm(A, G, trans_a=True)
            if batch:
                db = unbroadcast(db.reshape(batch + (k, n)), b2_shape)
            db = db.reshape(b_shape)
        return da, db


class Linear(Function):
    """y = x W^T + b, x (..., in), W (out, in), b (out,) or None.

    dx = g W,   dW = g^T x (summed over leading axes),   db = sum of g over leading axes.
    One node instead of transpose + matmul + add, and W^T is never materialised.
    """

    node_name = "AddmmBackward0"

    @staticmethod
    def forward(ctx, x, w, b=None):
        if x.shape[-1] != w.shape[-1] or w.ndim != 2:
            raise ValueError(f"linear: input of shape {tuple(x.shape)} and weight of shape "
                             f"{tuple(w.shape)}: expected weight (out_features, "
                             f"{x.shape[-1] if x.ndim else '?'})")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"linear: bias of shape {tuple(b.shape)}, expected ({w.shape[0]},)")
        x2 = x.reshape(-1, x.shape[-1])
        y = ctx.kernels.matmul(x2, w, trans_b=True)
        if b is not None:
            ctx.backend.add_channel_bias_(y, b)  # (y is (N, out): its axis 1)
        ctx.save_for_backward(x2, w)
        ctx.x_shape = x.shape
        ctx.has_bias = b is not None
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x2, w = ctx.saved_tensors
        g2 = g.reshape(-1, w.shape[0])
        dx = ctx.kernels.matmul(g2, w).reshape(ctx.x_shape) if ctx.needs_input_grad[0] else None
        dw = ctx.kernels.matmul(g2, x2, trans_a=True) if ctx.needs_input_grad[1] else None
        if not ctx.has_bias:
            return dx, dw
        return dx, dw, ctx.backend.channel_sum(g2)


def _xp_matmul(xp):
    def mm(a, b, trans_a=False, trans_b=False):
        if trans_a:
            a = xp.swapaxes(a, -1, -2)
        if trans_b:
            b = xp.swapaxes(b, -1, -2)
        return xp.matmul(a, b)
    return mm
