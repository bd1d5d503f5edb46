"""Einstein summation (``torch.einsum``) with a hand-derived backward."""
from __future__ import annotations

import string

from ..autograd import Function


def parse_equation(equation, ndims):
    """``(input subscripts, output subscripts)`` of ``equation`` with every ``...``
    spelled out as capital letters (the ellipsis dims align from the right, as NumPy
    broadcasts them) and an implicit output (no ``->``) made explicit: the letters used
    exactly once, in alphabetical order, after the ellipsis dims."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    subs = lhs.split(",")
    if len(subs) != len(ndims):
        raise ValueError(f"einsum: equation {equation!r} has {len(subs)} operand subscripts "
                         f"but {len(ndims)} operands were given")
    free = [c for c in string.ascii_uppercase if c not in eq]
    ell_rank = 0
    for s, nd in zip(subs, ndims):
        if "..." in s:
            ell_rank = max(ell_rank, nd - (len(s) - 3))
    ell = "".join(free[:ell_rank])
    spelled = []
    for k, (s, nd) in enumerate(zip(subs, ndims)):
        if "..." in s:
            n = nd - (len(s) - 3)
            if n < 0:
                raise ValueError(f"einsum: operand {k} has {nd} dimensions, fewer than its "
                                 f"subscripts {s!r} name")
            s = s.replace("...", ell[ell_rank - n:])
        if not s.isalpha() or len(s) != nd:
            raise ValueError(f"einsum: subscripts {s!r} of operand {k} do not match its "
                             f"{nd} dimensions (letters a-z, A-Z and one '...')")
        if len(set(s)) != len(s):
            raise ValueError(f"einsum: operand {k} repeats a subscript in {s!r} (a diagonal); "
                             "this is not supported: take the diagonal with indexing first")
        spelled.append(s)
    if arrow:
        out = out.replace("...", ell)
    else:
        letters = "".join(spelled)
        out = ell + "".join(sorted(c for c in set(letters)
                                   if letters.count(c) == 1 and c not in ell))
    if any(c not in "".join(spelled) for c in out) or len(set(out)) != len(out):
        raise ValueError(f"einsum: output subscripts {out!r} of {equation!r} must be distinct "
                         "letters that appear in the inputs")
    return spelled, out


class Einsum(Function):
    """y = einsum(eq, a_1, ..., a_n): y[out] = sum over the letters not in ``out`` of
    prod_k a_k[subs_k].

    The result is linear in each operand, so for G = dL/dy:
        dA_k[subs_k] = sum over the letters not in subs_k of G[out] prod_{j != k} a_j[subs_j]
    i.e. one more einsum, ``out, subs_j (j != k) -> subs_k``. A letter of subs_k found in
    no other operand and not in ``out`` was summed over a_k alone: the gradient is
    constant along it (broadcast back). A letter where a_k has size 1 but the others
    broadcast it is summed back to size 1.
    """

    @staticmethod
    def forward(ctx, equation, *operands):
        subs, out = parse_equation(equation, [o.ndim for o in operands])
        ctx.subs, ctx.out = subs, out
        ctx.save_for_backward(*operands)
        return ctx.xp.einsum(",".join(subs) + "->" + out, *operands)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        ops, subs, out = ctx.saved_tensors, ctx.subs, ctx.out
        grads = []
        for k, (a, s) in enumerate(zip(ops, subs)):
            if not ctx.needs_input_grad[k]:
                grads.append(None)
                continue
            others = [(o, t) for j, (o, t) in enumerate(zip(ops, subs)) if j != k]
            known = set(out).union(*(set(t) for _, t in others))
            target = "".join(c for c in s if c in known)
            eq = ",".join([out] + [t for _, t in others]) + "->" + target
            gk = xp.einsum(eq, g, *(o for o, _ in others))
            # letters summed over a_k alone: reinsert as size-1 axes, then broadcast
            gk = gk.reshape(tuple(gk.shape[target.index(c)] if c in target else 1 for c in s))
            summed = tuple(i for i, n in enumerate(a.shape) if n == 1 and gk.shape[i] != 1)
            if summed:
                gk = gk.sum(axis=summed, keepdims=True)
            grads.append(xp.ascontiguousarray(xp.broadcast_to(gk, a.shape)).astype(a.dtype,
                                                                                   copy=False))
        return tuple(grads)
