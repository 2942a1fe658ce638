"""LSTM, GRU and RNN: backpropagation through time, unrolled over the static sequence length.

Route chosen: the backward graph is **unrolled** over the sequence length T, which must be
static (from onnx shape inference, or, where that gives up, from two onnxruntime runs with
different batch and free sizes in transform.py; the batch may stay dynamic). Every per-step
``Split`` carries the static sizes, so onnxruntime fails loudly if fed another length rather
than returning a wrong gradient. Why not a ``Loop``/``Scan``
in the backward graph: every exporter we target (torch's legacy and dynamo exporters, tf2onnx
with a fixed input signature) writes a fixed T, an unrolled sweep is made of the same plain ops
that every other rule emits (MatMul, Mul, Add, Split, Concat), runs on any execution provider,
and costs one small MatMul plus a dozen elementwise ops per step and direction. A dynamic T is
refused with a clear message.

What is recomputed and what is read: the forward node's own ``Y`` (all hidden states; added to
the node when it lacks it) supplies every ``h_{t-1}``, so all gate pre-activations come from
three batched MatMuls over the whole sequence (``X W^T``, ``H_prev R^T``, and for GRU the reset
product) and are exactly the op's. Only the LSTM cell state is recomputed step by step
(``c_t = f_t c_{t-1} + i_t g_t``, peepholes included). The reverse sweep then runs one step
per time index: ``dA_t`` (the gate pre-activation cotangents) from ``dh_t``, and
``dh_{t-1} = dA_t R``; the input cotangent is one batched ``dX = dA W`` at the end.

Covered: directions forward/reverse/bidirectional; layout 0 and 1; initial_h/initial_c
(cotangents when they are on the input's path); sequence_lens (per-sample masks: padded steps
get no cotangent, Y_h/Y_c take the last valid step, a length-0 sample passes its initial state
through); LSTM peepholes; GRU linear_before_reset 0/1; clip (bounds the gates' activation
inputs, not the LSTM's h(c_t), as onnxruntime does); activations Sigmoid, Tanh, Relu in any
slot. Refused with the op named: other activations, LSTM input_forget=1, weights (W/R/B/P)
that depend on the input, a dynamic T.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from ..registry import VJPContext, vjp

ACTIVATIONS = ("Sigmoid", "Tanh", "Relu")
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
WEIGHT_INPUTS = {"LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3), "RNN": (1, 2, 3)}


class _Sweep:
    """Shared pieces of the three recurrences for one node."""

    def __init__(self, ctx: VJPContext):
        self.ctx, self.b, op = ctx, ctx.b, ctx.op_type
        self.op = op
        for i in WEIGHT_INPUTS[op]:
            if ctx.need(i):
                ctx.unsupported("its weights depend on the input (only input and initial-state gradients are built)")
        direction = ctx.attr_str("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            ctx.unsupported(f"direction {direction!r}")
        self.directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        self.layout = int(ctx.attr("layout", 0))
        self.clip = ctx.attr("clip", None)
        if op == "LSTM" and int(ctx.attr("input_forget", 0)):
            ctx.unsupported("input_forget=1")
        acts = ctx.attr("activations", None)
        k = len(DEFAULT_ACTIVATIONS[op])
        acts = [a.decode() if isinstance(a, bytes) else a for a in acts] if acts else DEFAULT_ACTIVATIONS[op]
        if len(acts) == k:
            acts = acts * len(self.directions)
        if len(acts) != k * len(self.directions):
            ctx.unsupported(f"{len(acts)} activations for {len(self.directions)} direction(s)")
        for a in acts:
            if a not in ACTIVATIONS:
                ctx.unsupported(f"activation {a!r} (exact gradients for {', '.join(ACTIVATIONS)})")
        self.acts = [acts[d * k : (d + 1) * k] for d in range(len(self.directions))]
        x = ctx.x(0)
        shape = ctx.shape(x)
        if shape is None or len(shape) != 3:
            ctx.unsupported(f"rank of {x!r} unknown after shape inference")
        T = shape[1 if self.layout else 0]
        if not isinstance(T, int):
            ctx.unsupported(
                "the sequence length is dynamic (the backward unrolls a static "
                "length: export the model with a fixed sequence length)"
            )
        self.T = T
        r_shape = ctx.shape(ctx.x(2))
        H = ctx.attr("hidden_size", None) or (r_shape[-1] if r_shape else None)
        if not isinstance(H, int):
            ctx.unsupported("hidden_size unknown")
        self.H = H
        self.dt = ctx.np_dtype(x)
        self.elem = ctx.elem(x)
        b = self.b
        # time-major views (layout 0): X (T, N, I), Y (T, D, N, H), states (D, N, H)
        self.X = b.op("Transpose", [x], perm=[1, 0, 2]) if self.layout else x
        y = ctx.forward_output(0, "Y")
        self.Y = b.op("Transpose", [y], perm=[1, 2, 0, 3]) if self.layout else y
        self.gY = ctx.g_opt(0)
        if self.gY is not None and self.layout:
            self.gY = b.op("Transpose", [self.gY], perm=[1, 2, 0, 3])
        self.gYh = self._state(ctx.g_opt(1))
        self.gYc = self._state(ctx.g_opt(2)) if op == "LSTM" else None
        self.h0 = self._state(ctx.x_opt(5))
        self.c0 = self._state(ctx.x_opt(6)) if op == "LSTM" else None
        self._zeros: str | None = None
        self._masks(ctx.x_opt(4))

    # -- small helpers ---------------------------------------------------------------------
    def _state(self, name):
        if name is None or not self.layout:
            return name
        return self.b.op("Transpose", [name], perm=[1, 0, 2])

    def mul(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = self.b.op("Mul", [out, x])
        return out

    def add(self, *xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return None
        return xs[0] if len(xs) == 1 else self.b.op("Sum", xs)

    def incoming(self, seed, carry):
        """The cotangent reaching h_t: its seed from the outputs plus the carry from step t+1
        (zeros shaped like h_t when neither exists)."""
        g = self.add(seed, carry)
        return g if g is not None else self.mul(self.zeros(), self.b.scalar(0.0, self.dt))

    def sub(self, a, c):
        return self.b.op("Sub", [a, c])

    def one(self):
        return self.b.scalar(1.0, self.dt)

    def steps(self, t: str) -> list[str]:
        """``t`` (T, ...) split into T pieces (1, ...); onnxruntime fails on any other
        length (a run-time check of the T the graph was built for)."""
        return self.b.op_multi("Split", [t, self.b.ints([1] * self.T)], outputs=self.T, axis=0)

    def rows(self, t: str, start: int, stop: int, axis: int = 0) -> str:
        return self.b.op("Slice", [t, self.b.ints([start]), self.b.ints([stop]), self.b.ints([axis])])

    def pick(self, t: str, d: int, axis: int) -> str:
        """Direction ``d`` of ``t`` along ``axis``, that axis dropped."""
        return self.b.op("Gather", [t, self.b.const(np.int64(d))], axis=axis)

    def split_gates(self, t: str, n: int) -> list[str]:
        if n == 1:
            return [t]
        return self.b.op_multi("Split", [t, self.b.ints([self.H] * n)], outputs=n, axis=-1)

    def zeros(self) -> str:
        """(1, N, H) zeros (the default initial state)."""
        if self._zeros is None:
            b = self.b
            shape = b.op("Concat", [b.ints([1]), b.shape(self.X, 1, 2), b.ints([self.H])], axis=0)
            self._zeros = b.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.zeros((1,), self.dt)))
        return self._zeros

    def init_state(self, s, d):
        return self.rows(s, d, d + 1) if s is not None else self.zeros()

    def _masks(self, seq):
        """Per-position masks from sequence_lens, each (T, N, 1) split per step, or None."""
        self.seq = seq
        if seq is None:
            return
        b, T = self.b, self.T
        lens = b.op("Cast", [seq], to=7)  # int64

        def mask(cmp: str, values) -> str:
            col = b.const(np.asarray(values, np.int64).reshape(-1, 1))
            m = b.op("Cast", [b.op(cmp, [col, lens])], to=self.elem)
            return b.op("Unsqueeze", [m, b.ints([2])])

        self.valid = mask("Less", range(T))  # t < len
        self.valid_steps = self.steps(self.valid)
        self.next_valid = self.steps(mask("Less", range(1, T + 1)))  # t + 1 < len
        self.last_steps = self.steps(mask("Equal", range(1, T + 1)))  # t == len - 1
        self.empty = mask("Equal", [0])  # (1, N, 1): len == 0

    def activation(self, name: str, pre: str, clipped: bool = True) -> tuple[str, str]:
        """(y, dy/dpre) of activation ``name``; ``clip`` bounds its input when ``clipped``
        (the gates' activations are; the LSTM's h(c_t) is not, as in onnxruntime)."""
        b = self.b
        inner = pre
        clip = self.clip if clipped else None
        if clip is not None:
            c = self.b.scalar(clip, self.dt)
            inner = b.op("Clip", [pre, b.op("Neg", [c]), c])
        y = b.op(name, [inner])
        if name == "Sigmoid":
            dy = self.mul(y, self.sub(self.one(), y))
        elif name == "Tanh":
            dy = self.sub(self.one(), self.mul(y, y))
        else:  # Relu
            dy = b.op("Cast", [b.op("Greater", [inner, b.scalar(0.0, self.dt)])], to=self.elem)
        if clip is not None:
            inside = b.op("Less", [b.op("Abs", [pre]), b.scalar(clip, self.dt)])
            dy = self.mul(dy, b.op("Cast", [inside], to=self.elem))
        return y, dy

    # -- the sweep -------------------------------------------------------------------------
    def weights(self, d: int, n: int):
        """W_d (nH, I), R_d (nH, H), summed or split biases of direction ``d``."""
        ctx, b = self.ctx, self.b
        w, r = self.pick(ctx.x(1), d, 0), self.pick(ctx.x(2), d, 0)
        wb = rb = None
        if ctx.x_opt(3) is not None:
            bias = self.pick(ctx.x(3), d, 0)
            wb, rb = self.rows(bias, 0, n * self.H), self.rows(bias, n * self.H, 2 * n * self.H)
        return w, r, wb, rb, (b.op("Transpose", [w]), b.op("Transpose", [r]))

    def h_prev(self, d: int, reverse: bool) -> str:
        """(T, N, H): the hidden state each position's step starts from, read off Y."""
        yd = self.pick(self.Y, d, 1)
        h0 = self.init_state(self.h0, d)
        return self._shifted(yd, h0, reverse) if self.T > 1 else h0

    def _shifted(self, states: str, init: str, reverse: bool) -> str:
        b, T = self.b, self.T
        if not reverse:
            return b.op("Concat", [init, self.rows(states, 0, T - 1)], axis=0)
        prev = b.op("Concat", [self.rows(states, 1, T), init], axis=0)
        if self.seq is not None:  # a step at t >= len - 1 starts from the initial state
            nv = b.op("Concat", self.next_valid, axis=0)
            prev = self.add(self.mul(prev, nv), self.mul(init, self.sub(self.one(), nv)))
        return prev

    def order(self, reverse: bool) -> list[int]:
        return list(range(self.T - 1, -1, -1)) if reverse else list(range(self.T))

    def seeds(self, d: int, reverse: bool):
        """Per-position cotangents of h (from Y and Y_h) and c (from Y_c), and the part of
        Y_h/Y_c cotangents that goes straight to the initial state (length-0 samples)."""
        T, order = self.T, self.order(reverse)
        dh: list[str | None] = [None] * T
        if self.gY is not None:
            gy = self.pick(self.gY, d, 1)
            if self.seq is not None:
                gy = self.mul(gy, self.valid)
            dh = list(self.steps(gy))
        dc: list[str | None] = [None] * T
        direct: list[str | None] = []
        for i, g in enumerate((self.gYh, self.gYc)):
            if g is None:
                direct.append(None)
                continue
            gd = self.rows(g, d, d + 1)
            out = dh if i == 0 else dc
            if self.seq is None:
                out[order[-1]] = self.add(out[order[-1]], gd)
                direct.append(None)
                continue
            if reverse:
                out[0] = self.add(out[0], self.mul(gd, self.valid_steps[0]))
            else:
                for t in range(T):
                    out[t] = self.add(out[t], self.mul(gd, self.last_steps[t]))
            direct.append(self.mul(gd, self.empty))
        return dh, dc, direct

    def carry(self, g, t: int, reverse: bool, k: int, init_parts: list):
        """Send the cotangent of the state a step at position ``t`` started from to the
        previous step (returned) or to the initial state (appended to ``init_parts``)."""
        if k == 0:
            init_parts.append(g)
            return None
        if reverse and self.seq is not None:
            nv = self.next_valid[t]
            init_parts.append(self.mul(g, self.sub(self.one(), nv)))
            return self.mul(g, nv)
        return g

    def finish(self, dA_by_dir, dh0_by_dir, dc0_by_dir):
        """Input and initial-state cotangents, in the node's layout."""
        ctx, b = self.ctx, self.b
        out = [None] * len(ctx.node.input)
        if ctx.need(0):
            parts = []
            for d, dA in enumerate(dA_by_dir):
                w = self.pick(ctx.x(1), d, 0)
                parts.append(b.op("MatMul", [b.op("Concat", dA, axis=0) if len(dA) > 1 else dA[0], w]))
            gx = self.add(*parts)
            out[0] = b.op("Transpose", [gx], perm=[1, 0, 2]) if self.layout else gx
        for i, per_dir in ((5, dh0_by_dir), (6, dc0_by_dir)):
            if per_dir is None or not ctx.need(i):
                continue
            g = b.op("Concat", per_dir, axis=0) if len(per_dir) > 1 else per_dir[0]
            out[i] = self._state(g)
        return out


def _sum_init(sweep: _Sweep, parts: list, direct) -> str:
    parts = [p for p in parts + [direct] if p is not None]
    if not parts:
        return sweep.mul(sweep.zeros(), sweep.b.scalar(0.0, sweep.dt))
    return sweep.add(*parts)


@vjp("RNN", since=7)
def rnn(ctx: VJPContext):
    """h_t = f(x_t W^T + h_{t-1} R^T + Wb + Rb)."""
    s, b = _Sweep(ctx), ctx.b
    dA_dirs, dh0_dirs = [], []
    for d, direction in enumerate(s.directions):
        rev = direction == "reverse"
        w, r, wb, rb, (wT, rT) = s.weights(d, 1)
        hp = s.h_prev(d, rev)
        a = s.add(b.op("MatMul", [s.X, wT]), b.op("MatMul", [hp, rT]), wb, rb)
        _, fprime = s.activation(s.acts[d][0], a)
        fp = s.steps(fprime)
        dh, _, (direct_h, _) = s.seeds(d, rev)
        dA: list[str | None] = [None] * s.T
        carry = None
        init: list[str] = []
        for k, t in reversed(list(enumerate(s.order(rev)))):
            g = s.incoming(dh[t], carry)
            dA[t] = da = s.mul(g, fp[t])
            carry = s.carry(b.op("MatMul", [da, r]), t, rev, k, init)
        dA_dirs.append(dA)
        dh0_dirs.append(_sum_init(s, init, direct_h))
    return s.finish(dA_dirs, dh0_dirs, None)


@vjp("GRU", since=7)
def gru(ctx: VJPContext):
    """z, r = f(.), h~ = g(x Wh^T + (r h) Rh^T + Rbh + Wbh) (linear_before_reset=0) or
    g(x Wh^T + r (h Rh^T + Rbh) + Wbh) (=1); h_t = (1 - z) h~ + z h_{t-1}."""
    s, b = _Sweep(ctx), ctx.b
    H = s.H
    lbr = int(ctx.attr("linear_before_reset", 0))
    dA_dirs, dh0_dirs = [], []
    for d, direction in enumerate(s.directions):
        rev = direction == "reverse"
        fname, gname = s.acts[d]
        w, r, wb, rb, (wT, rT) = s.weights(d, 3)
        hp = s.h_prev(d, rev)
        gx = s.add(b.op("MatMul", [s.X, wT]), wb)
        gx_zr, gx_h = s.rows(gx, 0, 2 * H, 2), s.rows(gx, 2 * H, 3 * H, 2)
        r_zr, r_h = s.rows(r, 0, 2 * H), s.rows(r, 2 * H, 3 * H)
        rb_zr = s.rows(rb, 0, 2 * H) if rb is not None else None
        rb_h = s.rows(rb, 2 * H, 3 * H) if rb is not None else None
        a_zr = s.add(gx_zr, b.op("MatMul", [hp, b.op("Transpose", [r_zr])]), rb_zr)
        a_z, a_r = s.split_gates(a_zr, 2)
        z, fz = s.activation(fname, a_z)
        rg, fr = s.activation(fname, a_r)
        rhT = b.op("Transpose", [r_h])
        if lbr:
            hh = s.add(b.op("MatMul", [hp, rhT]), rb_h)
            a_h = s.add(gx_h, s.mul(rg, hh))
        else:
            a_h = s.add(gx_h, b.op("MatMul", [s.mul(rg, hp), rhT]), rb_h)
        ht, gh = s.activation(gname, a_h)
        c_h = s.steps(s.mul(s.sub(s.one(), z), gh))  # d a_h / d h_t
        c_z = s.steps(s.mul(s.sub(hp, ht), fz))  # d a_z / d h_t
        z_t, fr_t, hp_t, r_t = s.steps(z), s.steps(fr), s.steps(hp), s.steps(rg)
        hh_t = s.steps(hh) if lbr else None
        dh, _, (direct_h, _) = s.seeds(d, rev)
        dA: list[str | None] = [None] * s.T
        carry = None
        init: list[str] = []
        for k, t in reversed(list(enumerate(s.order(rev)))):
            g = s.incoming(dh[t], carry)
            da_h, da_z = s.mul(g, c_h[t]), s.mul(g, c_z[t])
            if hh_t is not None:  # linear_before_reset
                da_r = s.mul(da_h, hh_t[t], fr_t[t])
                dA[t] = b.op("Concat", [da_z, da_r, da_h], axis=2)
                rec = b.op("MatMul", [b.op("Concat", [da_z, da_r, s.mul(da_h, r_t[t])], axis=2), r])
            else:
                drh = b.op("MatMul", [da_h, r_h])
                da_r = s.mul(drh, hp_t[t], fr_t[t])
                dA[t] = b.op("Concat", [da_z, da_r, da_h], axis=2)
                rec = s.add(s.mul(drh, r_t[t]), b.op("MatMul", [b.op("Concat", [da_z, da_r], axis=2), r_zr]))
            dprev = s.add(s.mul(g, z_t[t]), rec)
            carry = s.carry(dprev, t, rev, k, init)
        dA_dirs.append(dA)
        dh0_dirs.append(_sum_init(s, init, direct_h))
    return s.finish(dA_dirs, dh0_dirs, None)


@vjp("LSTM", since=7)
def lstm(ctx: VJPContext):
    """Gates i, o, f, c (W/R/B order iofc, peepholes P order iof):
    i = f(a_i + P_i c_{t-1}), f = f(a_f + P_f c_{t-1}), g = g(a_c),
    c_t = f c_{t-1} + i g, o = f(a_o + P_o c_t), h_t = o h(c_t)."""
    s, b = _Sweep(ctx), ctx.b
    H = s.H
    peep = ctx.x_opt(7)
    dA_dirs, dh0_dirs, dc0_dirs = [], [], []
    for d, direction in enumerate(s.directions):
        rev = direction == "reverse"
        fname, gname, hname = s.acts[d]
        w, r, wb, rb, (wT, rT) = s.weights(d, 4)
        hp = s.h_prev(d, rev)
        a = s.steps(s.add(b.op("MatMul", [s.X, wT]), b.op("MatMul", [hp, rT]), wb, rb))
        if peep is not None:
            pd = s.pick(peep, d, 0)
            p_i, p_o, p_f = (s.rows(pd, j * H, (j + 1) * H) for j in range(3))
        c0 = s.init_state(s.c0, d)
        # forward: the cell state, step by step in processing order
        order = s.order(rev)
        st = {}
        c_prev = c0
        for k, t in enumerate(order):
            if k and rev and s.seq is not None:  # a step at t >= len - 1 starts from c0
                nv = s.next_valid[t]
                c_prev = s.add(s.mul(c_prev, nv), s.mul(c0, s.sub(s.one(), nv)))
            a_i, a_o, a_f, a_c = s.split_gates(a[t], 4)
            if peep is not None:
                a_i = s.add(a_i, s.mul(p_i, c_prev))
                a_f = s.add(a_f, s.mul(p_f, c_prev))
            i, di = s.activation(fname, a_i)
            fg, df = s.activation(fname, a_f)
            gg, dg = s.activation(gname, a_c)
            c = b.op("Add", [s.mul(fg, c_prev), s.mul(i, gg)], output=b.fresh(f"lstm_c{d}_t{t}"))  # named for the tests
            if peep is not None:
                a_o = s.add(a_o, s.mul(p_o, c))
            o, do = s.activation(fname, a_o)
            hc, dhc = s.activation(hname, c, clipped=False)
            st[t] = (c_prev, i, di, fg, df, gg, dg, o, do, hc, dhc)
            c_prev = c
        # reverse sweep
        dh, dc_seed, (direct_h, direct_c) = s.seeds(d, rev)
        dA: list[str | None] = [None] * s.T
        carry_h = carry_c = None
        init_h: list[str] = []
        init_c: list[str] = []
        for k, t in reversed(list(enumerate(order))):
            c_prev, i, di, fg, df, gg, dg, o, do, hc, dhc = st[t]
            g = s.incoming(dh[t], carry_h)
            da_o = s.mul(g, hc, do)
            dc = s.add(carry_c, dc_seed[t], s.mul(g, o, dhc), s.mul(da_o, p_o) if peep is not None else None)
            da_i = s.mul(dc, gg, di)
            da_f = s.mul(dc, c_prev, df)
            da_c = s.mul(dc, i, dg)
            dA[t] = da = b.op("Concat", [da_i, da_o, da_f, da_c], axis=2)
            dc_prev = s.add(s.mul(dc, fg), *((s.mul(da_i, p_i), s.mul(da_f, p_f)) if peep is not None else ()))
            carry_h = s.carry(b.op("MatMul", [da, r]), t, rev, k, init_h)
            carry_c = s.carry(dc_prev, t, rev, k, init_c)
        dA_dirs.append(dA)
        dh0_dirs.append(_sum_init(s, init_h, direct_h))
        dc0_dirs.append(_sum_init(s, init_c, direct_c))
    return s.finish(dA_dirs, dh0_dirs, dc0_dirs)
