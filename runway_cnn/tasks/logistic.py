"""L2-regularised logistic regressions for many outputs that share one feature matrix: the
stage-1 solvers of the multi-label sigmoid head (:class:`OneVsRestLogistic`, one binary
regression per label) and the attribute heads (:class:`SoftmaxPerAttribute`, one multinomial
regression per attribute, on its known rows only).

Each minimises, for every output at once, scikit-learn's objective
½‖w‖² + C Σᵢ sᵢ loss(xᵢ·w + b) (the bias not penalised, sᵢ a sample weight) — the same solutions
as one scikit-learn ``LogisticRegression`` per output — but in a basis where the problem is nearly
round, so a Newton method needs a dozen steps where a gradient method on the raw features needs
hundreds:

1. *An exact change of variables.* Centre the features (the unpenalised bias absorbs the mean)
   and write w = V β with V the right singular vectors of the centred training features:
   components of w outside their row space change no logit, only the penalty, so they are zero
   at the optimum, and ‖w‖ = ‖β‖. The products shrink to ``min(images, dims)`` columns.
2. *A diagonal preconditioner.* In that basis the Hessian C Zᵀ H Z + I (H the loss's curvature
   in the logits) is close to diagonal; each variable is scaled by the square root of its
   diagonal entry (per output, at the warm start).
3. *Newton with a truncated-CG trust region* (SciPy's ``trust-ncg``), the Hessian applied to all
   outputs' directions in two matrix products, warm-started along the C path.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

GTOL = 1e-5  # on the scaled gradient's norm; probabilities agree with a 1e-8 fit to ~1e-5


class _NewtonInFeatureBasis:
    """The shared machinery: a subclass gives the loss in the logits (value, gradient, curvature
    and the curvature applied to a direction)."""

    def __init__(self, features: np.ndarray | _NewtonInFeatureBasis, outputs: int):
        """``features``, or another solver on the same features (its basis is reused)."""
        if isinstance(features, _NewtonInFeatureBasis):
            self.mean, self.basis, self.z = features.mean, features.basis, features.z
        else:
            x = np.asarray(features, np.float64)
            self.mean = x.mean(axis=0)
            _, singular, vt = np.linalg.svd(x - self.mean, full_matrices=False)
            rank = int(np.sum(singular > singular[:1].max(initial=0.0) * max(x.shape) * 1e-12))
            self.basis = vt[:rank].T  # [d, rank]
            self.z = (x - self.mean) @ self.basis  # centred features in that basis, [n, rank]
        self.beta = np.zeros((self.basis.shape[1], outputs))
        self.bias = np.zeros(outputs)

    def _loss(self, logits: np.ndarray) -> tuple[float, np.ndarray, object]:
        """(Σ loss, d loss / d logits, what :meth:`_curvature_times` needs)."""
        raise NotImplementedError

    def _curvature(self, logits: np.ndarray) -> np.ndarray:
        """The diagonal of the loss's Hessian in the logits, ``[n, outputs]``."""
        raise NotImplementedError

    def _curvature_times(self, state: object, u: np.ndarray) -> np.ndarray:
        """The loss's Hessian in the logits applied to ``u`` (``[n, outputs]``)."""
        raise NotImplementedError

    def fit(self, c: float) -> tuple[np.ndarray, np.ndarray]:
        """(kernel ``[d, outputs]``, bias ``[outputs]``) for the inverse penalty ``c``, in the
        original feature space; warm-started from the previous fit."""
        z, shape = self.z, self.beta.shape
        curvature = self._curvature(z @ self.beta + self.bias)
        scale = np.sqrt(1.0 + c * ((z * z).T @ curvature))  # [rank, outputs]
        bias_scale = np.sqrt(1.0 + c * curvature.sum(axis=0))
        state = {}

        def unscale(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return theta[:scale.size].reshape(shape) / scale, theta[scale.size:] / bias_scale

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            beta, bias = unscale(theta)
            loss, grad_logits, state["curvature"] = self._loss(z @ beta + bias)
            grad_beta = c * (z.T @ grad_logits) + beta
            return (c * loss + 0.5 * np.sum(beta * beta),
                    np.concatenate([(grad_beta / scale).ravel(),
                                    c * grad_logits.sum(axis=0) / bias_scale]))

        def hessian_times(theta: np.ndarray, v: np.ndarray) -> np.ndarray:
            v_beta, v_bias = unscale(v)
            u = c * self._curvature_times(state["curvature"], z @ v_beta + v_bias)
            return np.concatenate([((z.T @ u + v_beta) / scale).ravel(),
                                   u.sum(axis=0) / bias_scale])

        start = np.concatenate([(self.beta * scale).ravel(), self.bias * bias_scale])
        solution = minimize(objective, start, jac=True, hessp=hessian_times, method="trust-ncg",
                            options={"gtol": GTOL, "maxiter": 200})
        self.beta, self.bias = unscale(solution.x)
        kernel = self.basis @ self.beta
        return kernel.astype(np.float32), (self.bias - self.mean @ kernel).astype(np.float32)


class OneVsRestLogistic(_NewtonInFeatureBasis):
    """One binary logistic regression per column of the 0/1 ``targets`` ``[n, labels]``."""

    def __init__(self, features: np.ndarray, targets: np.ndarray):
        super().__init__(features, np.shape(targets)[1])
        self.y = np.asarray(targets, np.float64)
        prior = np.clip(self.y.mean(axis=0), 1e-6, 1 - 1e-6)
        self.bias = np.log(prior / (1 - prior))

    def _loss(self, logits):
        e = np.exp(-np.abs(logits))
        # log(1 + exp(logit)) − y·logit and the sigmoid, written stably
        loss = np.log1p(e) + np.maximum(logits, 0.0) - self.y * logits
        sigmoid = np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return loss.sum(), sigmoid - self.y, sigmoid * (1.0 - sigmoid)

    def _curvature(self, logits):
        sigmoid = 1.0 / (1.0 + np.exp(-logits))
        return sigmoid * (1.0 - sigmoid)

    def _curvature_times(self, state, u):
        return state * u


class SoftmaxPerAttribute(_NewtonInFeatureBasis):
    """One multinomial logistic regression per attribute (scikit-learn's multinomial
    parametrisation: one weight vector per value) over the concatenated logits of all attributes;
    ``targets`` ``[n, attributes]`` value ids, -1 where unknown (those cells weigh nothing);
    ``weights`` ``[n, attributes]`` optional per-cell sample weights."""

    def __init__(self, features: np.ndarray | _NewtonInFeatureBasis, targets: np.ndarray,
                 sizes: list[int], weights: np.ndarray | None = None):
        super().__init__(features, int(sum(sizes)))
        self.targets, self.cells = np.asarray(targets), weights
        targets = self.targets
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        self.sizes = np.asarray(sizes)
        known = (targets >= 0).astype(np.float64)
        cells = known if weights is None else known * np.asarray(weights, np.float64)
        self.weight = np.repeat(cells, self.sizes, axis=1)  # per logit column
        self.onehot = np.zeros((len(targets), int(sum(sizes))))
        rows, attributes = np.nonzero(targets >= 0)
        self.onehot[rows, self.starts[attributes] + targets[rows, attributes]] = 1.0
        counts = (self.onehot * self.weight).sum(axis=0) + 1e-3
        totals = np.repeat(np.add.reduceat(counts, self.starts), self.sizes)
        self.bias = np.log(counts / totals)  # each attribute's value frequencies

    def subset(self, attributes: list[int]) -> SoftmaxPerAttribute:
        """A solver of only these attributes (by position), on the same basis, warm-started
        from this one's solution."""
        columns = np.concatenate([np.arange(self.starts[a], self.starts[a] + self.sizes[a])
                                  for a in attributes]).astype(int)
        part = SoftmaxPerAttribute(self, self.targets[:, attributes],
                                   [int(self.sizes[a]) for a in attributes],
                                   None if self.cells is None
                                   else np.asarray(self.cells)[:, attributes])
        part.beta, part.bias = self.beta[:, columns], self.bias[columns]
        return part

    def _softmax(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, log-probabilities) within each attribute's columns."""
        top = np.repeat(np.maximum.reduceat(logits, self.starts, axis=1), self.sizes, axis=1)
        shifted = logits - top
        e = np.exp(shifted)
        total = np.repeat(np.add.reduceat(e, self.starts, axis=1), self.sizes, axis=1)
        return e / total, shifted - np.log(total)

    def _segment_sum(self, x: np.ndarray) -> np.ndarray:
        return np.repeat(np.add.reduceat(x, self.starts, axis=1), self.sizes, axis=1)

    def _loss(self, logits):
        p, log_p = self._softmax(logits)
        loss = -np.sum(self.weight * self.onehot * log_p)
        return loss, self.weight * (p - self.onehot), p

    def _curvature(self, logits):
        p, _ = self._softmax(logits)
        return self.weight * p * (1.0 - p)

    def _curvature_times(self, p, u):
        return self.weight * (p * u - p * self._segment_sum(p * u))
