"""A float64 numpy reference for ONNX LSTM, GRU and RNN, written from the operator spec
(directions, layout, sequence_lens, initial states, peepholes, clip, activations,
linear_before_reset). onnx's own reference kernels ignore sequence_lens, clip and the
activation list, and onnxruntime has no float64 kernels; this one is checked against
onnxruntime's float32 outputs in test_recurrent.py before it serves as the finite-difference
reference."""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

ACT = {"Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "Tanh": np.tanh, "Relu": lambda x: np.maximum(x, 0.0)}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def run_recurrent(
    op,
    X,
    W,
    R,
    B=None,
    seq=None,
    h0=None,
    c0=None,
    P=None,
    *,
    direction="forward",
    layout=0,
    activations=None,
    clip=None,
    linear_before_reset=0,
):
    """(Y, Y_h[, Y_c]) of ``op`` ("LSTM"/"GRU"/"RNN") in the spec's layout."""
    nd = 2 if direction == "bidirectional" else 1
    if layout:
        X = X.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    T, N, _ = X.shape
    H = R.shape[-1]
    g = GATES[op]
    B = np.zeros((nd, 2 * g * H)) if B is None else B
    h0 = np.zeros((nd, N, H)) if h0 is None else h0
    c0 = np.zeros((nd, N, H)) if c0 is None else c0
    P = np.zeros((nd, 3 * H)) if P is None else P
    seq = np.full(N, T) if seq is None else np.asarray(seq)
    acts = list(activations or DEFAULT_ACTS[op])
    k = len(DEFAULT_ACTS[op])
    if len(acts) == k:
        acts = acts * nd

    def cl(a):
        return a if clip is None else np.clip(a, -clip, clip)

    Y = np.zeros((T, nd, N, H), X.dtype)
    Yh = np.zeros((nd, N, H), X.dtype)
    Yc = np.zeros((nd, N, H), X.dtype)
    for d in range(nd):
        f, *rest = [ACT[a] for a in acts[d * k : (d + 1) * k]]
        w, r, wb, rb = W[d], R[d], B[d, : g * H], B[d, g * H :]
        h, c = h0[d].copy(), c0[d].copy()
        order = range(T) if (direction == "forward" or d == 0 and direction != "reverse") else range(T - 1, -1, -1)
        for t in order:
            x = X[t]
            if op == "RNN":
                h_new = f(cl(x @ w.T + h @ r.T + wb + rb))
                c_new = c
            elif op == "GRU":
                gg = rest[0]
                gx = x @ w.T + wb
                z = f(cl(gx[:, :H] + h @ r[:H].T + rb[:H]))
                rr = f(cl(gx[:, H : 2 * H] + h @ r[H : 2 * H].T + rb[H : 2 * H]))
                if linear_before_reset:
                    a = gx[:, 2 * H :] + rr * (h @ r[2 * H :].T + rb[2 * H :])
                else:
                    a = gx[:, 2 * H :] + (rr * h) @ r[2 * H :].T + rb[2 * H :]
                ht = gg(cl(a))
                h_new = (1 - z) * ht + z * h
                c_new = c
            else:
                gg, hh = rest
                a = x @ w.T + h @ r.T + wb + rb
                pi, po, pf = P[d, :H], P[d, H : 2 * H], P[d, 2 * H :]
                i = f(cl(a[:, :H] + pi * c))
                fg = f(cl(a[:, 2 * H : 3 * H] + pf * c))
                c_new = fg * c + i * gg(cl(a[:, 3 * H :]))
                o = f(cl(a[:, H : 2 * H] + po * c_new))
                h_new = o * hh(c_new)
            valid = (t < seq)[:, None]
            h = np.where(valid, h_new, h)
            c = np.where(valid, c_new, c)
            Y[t, d] = np.where(valid, h_new, 0.0)
        Yh[d], Yc[d] = h, c
    if layout:
        Y, Yh, Yc = Y.transpose(2, 0, 1, 3), Yh.transpose(1, 0, 2), Yc.transpose(1, 0, 2)
    return (Y, Yh, Yc) if op == "LSTM" else (Y, Yh)


def _kernel(op):
    n_in = 8 if op == "LSTM" else 6

    class Kernel(OpRun):
        op_domain = ""

        def _run(self, *inputs, **attrs):
            ins = list(inputs) + [None] * (n_in - len(inputs))
            X, W, R, B, seq, h0 = ins[:6]
            c0, P = (ins[6], ins[7]) if op == "LSTM" else (None, None)
            acts = attrs.get("activations")
            acts = [a.decode() if isinstance(a, bytes) else a for a in acts] if acts else None
            direction = attrs.get("direction") or "forward"
            direction = direction.decode() if isinstance(direction, bytes) else direction
            out = run_recurrent(
                op,
                X,
                W,
                R,
                B,
                seq,
                h0,
                c0,
                P,
                direction=direction,
                layout=attrs.get("layout") or 0,
                activations=acts,
                clip=attrs.get("clip"),
                linear_before_reset=attrs.get("linear_before_reset") or 0,
            )
            return tuple(v.astype(X.dtype) for v in out)

    Kernel.__name__ = op
    return Kernel


LSTM, GRU, RNN = _kernel("LSTM"), _kernel("GRU"), _kernel("RNN")
