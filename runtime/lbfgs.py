"""Full-batch L-BFGS for small problems (numpy, float64 on the host).

``LBFGS(history, lr, tol_grad, tol_change)`` keeps the curvature pairs (s_k, y_k) between
calls so a run can be checkpointed and resumed (``state_dict`` / ``load_state_dict``).
``minimize(fun, x, max_iter)`` runs up to ``max_iter`` iterations of the two-loop recursion
(Nocedal & Wright, Algorithm 7.4) with a strong-Wolfe line search (bracketing + zoom with
cubic/bisection interpolation, Algorithm 3.5/3.6; c1 = 1e-4, c2 = 0.9), starting from the
step ``lr`` (the first iteration is scaled by 1/||g||_1 like torch.optim.LBFGS).

``fun(x) -> (f, g)`` with x, g float64 1-D.  The training loop's objective
(``full_batch_objective``) is the mean train-mode loss over all full batches of the training
split, from ``net.compute_grads``, plus weight_decay/2 * ||w||^2 over the decayed tensors;
``check_lbfgs_config`` refuses the per-step settings this objective cannot honour.
"""
from __future__ import annotations

import numpy as np


class LBFGS:
    def __init__(self, history: int = 10, lr: float = 1.0, tol_grad: float = 1e-7,
                 tol_change: float = 1e-9):
        self.m, self.lr, self.tol_grad, self.tol_change = int(history), float(lr), tol_grad, tol_change
        self.s: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.n_iter = 0
        self.n_evals = 0

    # ------------------------------------------------------------------ direction
    def direction(self, g: np.ndarray) -> np.ndarray:
        """-H g by the two-loop recursion over the stored pairs (H0 = gamma I)."""
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(self.s), reversed(self.y)):
            rho = 1.0 / float(y @ s)
            a = rho * float(s @ q)
            q -= a * y
            alphas.append((rho, a))
        if self.s:
            q *= float(self.s[-1] @ self.y[-1]) / float(self.y[-1] @ self.y[-1])
        for (s, y), (rho, a) in zip(zip(self.s, self.y), reversed(alphas)):
            b = rho * float(y @ q)
            q += (a - b) * s
        return -q

    # ------------------------------------------------------------------ line search
    def _wolfe(self, fun, x, f0, g0, d, t, c1=1e-4, c2=0.9, max_ls=25):
        """Strong-Wolfe line search along d from t; returns (t, f, g)."""
        gtd0 = float(g0 @ d)
        t_prev, f_prev, gtd_prev = 0.0, f0, gtd0
        for i in range(max_ls):
            f, g = fun(x + t * d)
            self.n_evals += 1
            gtd = float(g @ d)
            if f > f0 + c1 * t * gtd0 or (i > 0 and f >= f_prev):
                return self._zoom(fun, x, f0, gtd0, d, t_prev, f_prev, gtd_prev, t, f, gtd, c1, c2)
            if abs(gtd) <= -c2 * gtd0:
                return t, f, g
            if gtd >= 0:
                return self._zoom(fun, x, f0, gtd0, d, t, f, gtd, t_prev, f_prev, gtd_prev, c1, c2)
            t_prev, f_prev, gtd_prev = t, f, gtd
            t *= 2.0
        return t, f, g

    def _zoom(self, fun, x, f0, gtd0, d, lo, f_lo, gtd_lo, hi, f_hi, gtd_hi, c1, c2, max_zoom=20):
        f = g = None
        t = lo
        for _ in range(max_zoom):
            t = _cubic(lo, f_lo, gtd_lo, hi, f_hi, gtd_hi)
            f, g = fun(x + t * d)
            self.n_evals += 1
            gtd = float(g @ d)
            if f > f0 + c1 * t * gtd0 or f >= f_lo:
                hi, f_hi, gtd_hi = t, f, gtd
            else:
                if abs(gtd) <= -c2 * gtd0:
                    break
                if gtd * (hi - lo) >= 0:
                    hi, f_hi, gtd_hi = lo, f_lo, gtd_lo
                lo, f_lo, gtd_lo = t, f, gtd
            if abs(hi - lo) * np.abs(d).max() < self.tol_change:
                break
        return t, f, g

    # ------------------------------------------------------------------ driver
    def minimize(self, fun, x: np.ndarray, max_iter: int = 20, callback=None):
        """Run up to max_iter iterations from x (float64 1-D). Returns (x, f, g)."""
        x = np.asarray(x, np.float64).copy()
        f, g = fun(x)
        self.n_evals += 1
        for _ in range(max_iter):
            if np.abs(g).max() <= self.tol_grad:
                break
            d = self.direction(g)
            gtd = float(g @ d)
            if gtd > -1e-12:                      # not a descent direction: reset the memory
                self.s.clear(); self.y.clear()
                d, gtd = -g, -float(g @ g)
            t = self.lr if (self.s or self.n_iter) else min(1.0, 1.0 / np.abs(g).sum()) * self.lr
            t, f_new, g_new = self._wolfe(fun, x, f, g, d, t)
            s = t * d
            y = g_new - g
            if float(y @ s) > 1e-10:
                self.s.append(s); self.y.append(y)
                if len(self.s) > self.m:
                    self.s.pop(0); self.y.pop(0)
            x = x + s
            converged = abs(f_new - f) < self.tol_change
            f, g = f_new, g_new
            self.n_iter += 1
            if callback is not None:
                callback(x, f)
            if converged:
                break
        return x, f, g

    def state_dict(self) -> dict[str, np.ndarray]:
        k = len(self.s)
        n = self.s[0].shape[0] if k else 0
        return {"s": np.array(self.s).reshape(k, n), "y": np.array(self.y).reshape(k, n),
                "counters": np.array([self.n_iter, self.n_evals], np.int64)}

    def load_state_dict(self, d) -> None:
        self.s = [r.astype(np.float64) for r in np.asarray(d["s"])]
        self.y = [r.astype(np.float64) for r in np.asarray(d["y"])]
        self.n_iter, self.n_evals = (int(v) for v in np.asarray(d["counters"]))


def _cubic(x1, f1, g1, x2, f2, g2) -> float:
    """Minimiser of the cubic through (x1, f1, g1), (x2, f2, g2), kept inside the bracket;
    bisection when the cubic has no real minimiser there."""
    lo, hi = min(x1, x2), max(x1, x2)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2) if x1 != x2 else 0.0
    sq = d1 * d1 - g1 * g2
    if x1 != x2 and sq >= 0:
        d2 = np.sqrt(sq)
        t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)) if (g2 - g1 + 2 * d2) != 0 else None
        if t is not None and np.isfinite(t):
            margin = 0.1 * (hi - lo)
            return float(min(max(t, lo + margin), hi - margin))
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------------ training loop use
def check_lbfgs_config(opt_cfg, train_cfg: dict, param_info: dict, random_layers=()) -> None:
    """L-BFGS minimises one deterministic full-batch objective: the settings that only a
    per-step update implements, and the sources of noise (augmentation; random layers such
    as dropout, named in ``random_layers``), are refused, not silently ignored."""
    c = opt_cfg
    bad = [f"regularization.{k}" for k, on in (("l1", c.l1), ("max_norm", c.max_norm is not None),
                                               ("clip_grad_norm", c.clip_grad_norm is not None),
                                               ("decoupled", c.decoupled)) if on]
    sched = train_cfg.get("schedule") or {"constant": {}}
    if list(sched) != ["constant"] or int(train_cfg.get("warmup_epochs") or 0):
        bad.append("a learning-rate schedule or warmup (L-BFGS chooses its steps by line search)")
    if any(pi.lr_mult != 1.0 for pi in param_info.values()):
        bad.append("lr_mult")
    if train_cfg.get("augment"):
        bad.append("train.augment (the objective must be deterministic)")
    if random_layers:
        bad.append(f"the random layers {', '.join(sorted(set(random_layers)))} (a noisy objective "
                   f"breaks the line search)")
    if bad:
        raise ValueError(f"the lbfgs optimizer supports weight_decay (coupled L2) and freeze only; "
                         f"remove {', '.join(bad)} or use another optimizer")


def full_batch_objective(net, x, y, B: int, nb: int, weight_decay: float):
    """-> (fun, penalty): ``fun(w) -> (f, g)`` over the first ``nb`` batches of ``B`` of
    (x, y), with the L2 penalty on the decayed tensors; frozen tensors get no gradient, so
    they do not move.  Which tensors train and decay is the compiled optimizer's segment
    table (``net.optimizer.segments``: frozen ones are absent); a net without one trains
    and decays everything."""
    arena = net.param_arena
    n = arena.shape[0]
    segs = getattr(getattr(net, "optimizer", None), "segments", None)
    if segs is None:
        train = decay = np.ones(n)
    else:
        train, decay = np.zeros(n), np.zeros(n)
        for _, a, b, _, dec, _ in segs:
            train[a:b] = 1.0
            decay[a:b] = 1.0 if dec else 0.0

    def penalty(w):
        return 0.5 * weight_decay * float(np.dot(decay * w, w)) if weight_decay else 0.0

    def fun(w):
        arena[...] = w
        f, g = 0.0, np.zeros(n, np.float64)
        for i in range(nb):
            f += float(net.compute_grads(x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]))
            g += net.grad_arena
        f, g = f / nb, g / nb * train
        if weight_decay:
            f += penalty(w)
            g += weight_decay * decay * w
        return f, g
    return fun, penalty


def random_layers(net) -> list[str]:
    """Layers whose training-mode forward draws random numbers (dropout & co.)."""
    from compiler.ops import OPS
    g = getattr(net, "graphs", {}).get("train")
    return [n.layer for n in (g.nodes if g is not None else ()) if n.phase == "fwd" and OPS[n.op].random]


def lbfgs_epoch(net, lbfgs: LBFGS, x, y, B: int, nb: int, weight_decay: float, max_iter: int) -> float:
    """``max_iter`` L-BFGS iterations on the full-batch objective of the first ``nb``
    batches of (x, y); the net's parameters are set to the result.  Returns the data loss
    (the objective without its L2 penalty)."""
    fun, penalty = full_batch_objective(net, x, y, B, nb, weight_decay)
    w, f, _ = lbfgs.minimize(fun, net.param_arena.astype(np.float64), max_iter)
    net.param_arena[...] = w
    return f - penalty(w)
