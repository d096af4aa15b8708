"""One-vs-rest L2 logistic regression for many labels that share one feature matrix: the
multi-label sigmoid head's stage-1 solver.

It minimises, for every label at once, scikit-learn's objective
½‖w‖² + C Σᵢ log(1 + exp(−yᵢ (xᵢ·w + b))) (the bias not penalised) — the same solutions as one
``LogisticRegression`` per label — but in a basis where the problem is nearly round, so a
Newton method needs a dozen steps where a gradient method on the raw features needs hundreds:

1. *An exact change of variables.* Centre the features (the unpenalised bias absorbs the mean)
   and write w = V β with V the right singular vectors of the centred training features:
   components of w outside their row space change no logit, only the penalty, so they are zero
   at the optimum, and ‖w‖ = ‖β‖. The products shrink to ``min(images, dims)`` columns.
2. *A diagonal preconditioner.* In that basis the Hessian C Zᵀ diag(σ(1−σ)) Z + I is close to
   diagonal; each variable is scaled by the square root of its diagonal entry (per label, at the
   warm start).
3. *Newton with a truncated-CG trust region* (SciPy's ``trust-ncg``), the Hessian applied to
   all labels' directions in two matrix products, warm-started along the C path.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

GTOL = 1e-5  # on the scaled gradient's norm; probabilities agree with a 1e-8 fit to ~1e-5


class OneVsRestLogistic:
    """The solver for one training set: ``fit(c)`` returns (kernel ``[d, labels]``, bias
    ``[labels]``) in the original feature space; successive fits warm-start from the last."""

    def __init__(self, features: np.ndarray, targets: np.ndarray):
        x = np.asarray(features, np.float64)
        self.y = np.asarray(targets, np.float64)
        self.mean = x.mean(axis=0)
        _, singular, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        rank = int(np.sum(singular > singular[:1].max(initial=0.0) * max(x.shape) * 1e-12))
        self.basis = vt[:rank].T  # [d, rank]
        self.z = (x - self.mean) @ self.basis  # centred features in that basis, [n, rank]
        prior = np.clip(self.y.mean(axis=0), 1e-6, 1 - 1e-6)
        self.beta = np.zeros((rank, self.y.shape[1]))
        self.bias = np.log(prior / (1 - prior))

    def fit(self, c: float) -> tuple[np.ndarray, np.ndarray]:
        z, y = self.z, self.y
        shape = self.beta.shape
        curvature = _curvature(z @ self.beta + self.bias)
        scale = np.sqrt(1.0 + c * ((z * z).T @ curvature))  # [rank, labels]
        bias_scale = np.sqrt(1.0 + c * curvature.sum(axis=0))
        state = {}

        def unscale(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return theta[:scale.size].reshape(shape) / scale, theta[scale.size:] / bias_scale

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            beta, bias = unscale(theta)
            logits = z @ beta + bias
            e = np.exp(-np.abs(logits))
            # log(1 + exp(logit)) − y·logit and the sigmoid, written stably
            loss = np.log1p(e) + np.maximum(logits, 0.0) - y * logits
            sigmoid = np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            state["curvature"] = sigmoid * (1.0 - sigmoid)
            residual = (sigmoid - y) * c
            grad_beta = z.T @ residual + beta
            return (c * loss.sum() + 0.5 * np.sum(beta * beta),
                    np.concatenate([(grad_beta / scale).ravel(), residual.sum(axis=0) / bias_scale]))

        def hessian_times(theta: np.ndarray, v: np.ndarray) -> np.ndarray:
            v_beta, v_bias = unscale(v)
            u = (z @ v_beta + v_bias) * state["curvature"] * c
            return np.concatenate([((z.T @ u + v_beta) / scale).ravel(),
                                   u.sum(axis=0) / bias_scale])

        start = np.concatenate([(self.beta * scale).ravel(), self.bias * bias_scale])
        solution = minimize(objective, start, jac=True, hessp=hessian_times, method="trust-ncg",
                            options={"gtol": GTOL, "maxiter": 200})
        self.beta, self.bias = unscale(solution.x)
        kernel = self.basis @ self.beta
        return kernel.astype(np.float32), (self.bias - self.mean @ kernel).astype(np.float32)


def _curvature(logits: np.ndarray) -> np.ndarray:
    sigmoid = 1.0 / (1.0 + np.exp(-logits))
    return sigmoid * (1.0 - sigmoid)
