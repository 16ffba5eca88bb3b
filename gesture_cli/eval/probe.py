"""Linear probes on frozen features: the logistic-regression protocol of the DINOv2/DINOv3 evaluation
code, plus the temperature-weighted k-NN classifier of DINO.

The run-dir steps (`gx probe`: run_probes, probe_backbone) and the classifier's file are
`gesture_cli.tasks.probe`; this module fits and scores: arrays in, a `LinearProbe` and numbers out.

Protocol: features are standardised (mean/std of the training split); C (scikit-learn's inverse L2
strength) is chosen by accuracy on a stratified held-out slice of the training split, sweeping a log
grid from strong to weak regularisation with warm starts; the classifier is refit on the whole
training split at that C and scored once on the test split.

Two solvers minimise the same objective, scikit-learn's
    mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C N)        (bias not penalised):
`sklearn` (`LogisticRegression(C, max_iter)`, lbfgs) and `torch` (full-batch L-BFGS with strong-Wolfe
line search, on the run's device). `auto` takes torch on CUDA and sklearn on CPU.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gesture_cli.core.errors import ArtifactError, UsageError, unknown_choice

SOLVER_CHOICES = ("auto", "sklearn", "torch")
SHORT_GRID = (-4.0, 3.0, 8)  # 10^linspace(-4, 3, 8): the default C sweep
FULL_GRID = (-6.0, 5.0, 45)  # 10^linspace(-6, 5, 45): the DINOv2/DINOv3 sweep (--full-grid)
ABSENT_CLASS_BIAS = -1.0e4  # bias of a class with no training sample: never predicted, probability ~0
SMALL_PROBLEM_FLOPS = 2e7  # N*D*K below which the sklearn solver runs single-threaded BLAS


def c_grid(*, full: bool = False, points: int | None = None) -> np.ndarray:
    """The C values to sweep, ascending (= from strong to weak regularisation).

    full: DINO's 10^linspace(-6, 5, 45); else 10^linspace(-4, 3, 8). `points` overrides the count
    (the range stays that of the chosen grid).
    """
    lo, hi, n = FULL_GRID if full else SHORT_GRID
    return np.logspace(lo, hi, int(points or n))


# ----------------------------------------------------------------------------------------------
# Solvers: one objective, two implementations, picked by name
# ----------------------------------------------------------------------------------------------


class SklearnSolver:
    """scikit-learn's lbfgs LogisticRegression (float64 on CPU); warm starts through `coef_`."""

    name = "sklearn"

    def __init__(self, *, max_iter: int = 1000, tol: float = 1e-4):
        self.max_iter = max_iter
        self.tol = tol

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float64)  # lbfgs works in float64 anyway: convert once

    def prepare_labels(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.int64)

    def fit(self, x, y, *, c: float, init=None):
        """-> (state for warm starts, iterations). y: contiguous ids 0..K-1, every id present."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        clf = LogisticRegression(C=float(c), max_iter=self.max_iter, tol=self.tol, warm_start=init is not None)
        if init is not None:
            clf.coef_, clf.intercept_ = init[0].copy(), init[1].copy()
        # Small problems run single-threaded BLAS: threading a few-MFLOP matmul costs more than it saves,
        # and on a loaded machine OpenBLAS's spinning threads made a 3000 x 64 fit 30x slower (measured).
        # scikit-learn's OpenMP loss kernels (elementwise, cheap) run on one thread: after torch has run,
        # its OpenMP pool still spins and two runtimes fighting for the cores slowed fits by 1.4x.
        blas_threads = 1 if x.shape[0] * x.shape[1] * (int(y.max()) + 1) < SMALL_PROBLEM_FLOPS else None
        with (warnings.catch_warnings(), threadpool_limits(limits=blas_threads, user_api="blas"),
              threadpool_limits(limits=1, user_api="openmp")):
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        return (clf.coef_, clf.intercept_), int(np.max(clf.n_iter_))

    def predict(self, state, x) -> np.ndarray:
        coef, intercept = state
        z = x @ coef.T + intercept
        return (z[:, 0] > 0).astype(np.int64) if coef.shape[0] == 1 else z.argmax(axis=1)

    def weights(self, state, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(W [K, D], b [K]) of the softmax form; a binary problem's single row becomes (-w/2, +w/2)."""
        coef, intercept = state
        if num_classes == 2 and coef.shape[0] == 1:
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        return coef.astype(np.float32), intercept.astype(np.float32)


class TorchSolver:
    """Full-batch L-BFGS (strong-Wolfe line search) on the device: float32 on GPUs, float64 on CPU.

    float64 on CPU because float32 L-BFGS stalls on line-search noise before scikit-learn's gradient
    tolerance is met at large C; on a GPU the float32 throughput is worth it and converges as well.
    """

    name = "torch"

    def __init__(self, *, device, max_iter: int = 1000, tol: float = 1e-4, history: int = 10):
        import torch

        self.device = torch.device(device)
        self.dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        self.max_iter = max_iter
        self.tol = tol
        self.history = history  # L-BFGS memory, scipy's default maxcor

    def prepare(self, x: np.ndarray):
        import torch

        return torch.as_tensor(np.asarray(x), device=self.device).to(self.dtype)

    def prepare_labels(self, y: np.ndarray):
        import torch

        return torch.as_tensor(np.asarray(y, dtype=np.int64), device=self.device)

    def fit(self, x, y, *, c: float, init=None):
        import torch
        import torch.nn.functional as F

        n, d = x.shape
        k = int(y.max().item()) + 1
        if init is None:
            w = torch.zeros(k, d, device=self.device, dtype=self.dtype)
            b = torch.zeros(k, device=self.device, dtype=self.dtype)
        else:
            w, b = init[0].detach().clone(), init[1].detach().clone()
        w.requires_grad_(True)
        b.requires_grad_(True)
        lam = 1.0 / (float(c) * n)  # scikit-learn's objective divided by C*N: mean CE + ||W||^2/(2CN)
        opt = torch.optim.LBFGS(
            [w, b], lr=1.0, max_iter=self.max_iter, max_eval=self.max_iter * 5 // 4, history_size=self.history,
            tolerance_grad=self.tol, tolerance_change=1e-12, line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad(set_to_none=False)
            loss = F.cross_entropy(torch.addmm(b, x, w.T), y) + 0.5 * lam * w.pow(2).sum()
            loss.backward()
            return loss

        small = self.device.type == "cpu" and n * d * k < SMALL_PROBLEM_FLOPS
        threads = torch.get_num_threads()
        try:
            if small:  # see SklearnSolver.fit: one thread is faster for tiny matmuls, and robust under load
                torch.set_num_threads(1)
            with torch.enable_grad():
                opt.step(closure)
        finally:
            if small:
                torch.set_num_threads(threads)
        iters = int(opt.state[w].get("n_iter", 0)) if w in opt.state else 0
        return (w.detach(), b.detach()), iters

    def predict(self, state, x) -> np.ndarray:
        import torch

        w, b = state
        with torch.inference_mode():
            return torch.addmm(b, x, w.T).argmax(dim=1).cpu().numpy()

    def weights(self, state, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        w, b = state
        return w.float().cpu().numpy(), b.float().cpu().numpy()


SOLVERS: dict[str, type] = {"sklearn": SklearnSolver, "torch": TorchSolver}


def resolve_solver(name: str, device) -> str:
    """auto -> torch on CUDA, sklearn elsewhere (lbfgs on 2-8 CPU cores is as fast and needs no device)."""
    if name == "auto":
        return "torch" if getattr(device, "type", str(device)).startswith("cuda") else "sklearn"
    if name not in SOLVERS:
        raise unknown_choice("solver", name, SOLVER_CHOICES)
    return name


def build_solver(name: str, *, device="cpu", max_iter: int = 1000, tol: float = 1e-4):
    name = resolve_solver(name, device)
    if name == "torch":
        return TorchSolver(device=device, max_iter=max_iter, tol=tol)
    return SOLVERS[name](max_iter=max_iter, tol=tol)


# ----------------------------------------------------------------------------------------------
# The probe
# ----------------------------------------------------------------------------------------------


@dataclass
class LinearProbe:
    """softmax(((x - mean) / scale) @ weight.T + bias): a standardiser and a linear layer, in numpy."""

    weight: np.ndarray  # float32 [K, D]
    bias: np.ndarray  # float32 [K]
    mean: np.ndarray  # float32 [D], training-split feature mean
    scale: np.ndarray  # float32 [D], training-split feature std (1 where the std is 0)
    c: float  # the C it was fit with
    solver: str = ""
    sweep: list[dict] = field(default_factory=list)  # [{c, val_accuracy, iterations}] of the C search
    iterations: int = 0  # solver iterations of the final fit
    fit_seconds: float = 0.0  # wall time of search + final fit

    @property
    def feature_dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ArtifactError(f"features of dimension {x.shape[-1]} do not match the classifier's {self.feature_dim}")
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1).astype(np.int64)


def fit_scaler(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], scale [D]) like StandardScaler: population std, 1 for constant features."""
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    scale = np.where(std < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean)), 1.0, std)
    return mean.astype(np.float32), scale.astype(np.float32)


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    grid: np.ndarray | None = None,
    c: float | None = None,
    val_fraction: float = 0.2,
    solver: str = "auto",
    device="cpu",
    max_iter: int = 1000,
    tol: float = 1e-4,
    seed: int = 0,
    on_point: Callable[[dict], None] | None = None,
) -> LinearProbe:
    """Fit a standardised logistic-regression probe on x [N, D], y [N] (ids 0..num_classes-1).

    With `c`, fit once at that C. Otherwise sweep `grid` (ascending; default the short grid) on a
    stratified (1 - val_fraction) slice, scoring each C on the rest, warm-starting each fit from the
    previous (more regularised) one; then refit on all of x at the best C, warm-started from the
    slice's solution. `on_point(dict)` is called after each grid point.
    """
    from gesture_cli.data.images import stratified_split

    t0 = time.perf_counter()
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x must be [N, D] and y [N]; got {x.shape} and {y.shape}")
    present = np.unique(y)  # fit on the classes that occur; absent ones get a bias that never wins
    if len(present) < 2:
        raise UsageError(f"the training split has {len(present)} class(es); a probe needs at least 2")
    remap = np.full(num_classes, -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    yc = remap[y]
    mean, scale = fit_scaler(x)
    impl = build_solver(solver, device=device, max_iter=max_iter, tol=tol)
    xs = impl.prepare((x - mean) / scale)
    ys = impl.prepare_labels(yc)

    sweep: list[dict] = []
    init = None
    if c is None:
        grid = np.sort(np.asarray(grid if grid is not None else c_grid(), dtype=np.float64))
        if len(grid) == 1:
            c = float(grid[0])
        else:
            tr, va = stratified_split(yc, test_fraction=val_fraction, seed=seed)
            if len(va) == 0:
                raise UsageError(f"{len(y)} training samples are too few to hold out a slice for choosing C; pass --c")
            xtr, ytr = _rows(xs, tr), _rows(ys, tr)
            xva, yva = _rows(xs, va), yc[va]
            best = (-1.0, None, None)
            state = None
            for cv in grid:
                state, iters = impl.fit(xtr, ytr, c=float(cv), init=state)
                acc = float((impl.predict(state, xva) == yva).mean())
                point = {"c": float(cv), "val_accuracy": round(acc, 6), "iterations": iters}
                sweep.append(point)
                if on_point is not None:
                    on_point(point)
                if acc > best[0]:  # first best wins: ties go to the stronger regularisation
                    best = (acc, float(cv), state)
            _, c, init = best
    state, iters = impl.fit(xs, ys, c=float(c), init=init)
    w, b = impl.weights(state, len(present))
    weight = np.zeros((num_classes, x.shape[1]), dtype=np.float32)
    bias = np.full(num_classes, ABSENT_CLASS_BIAS, dtype=np.float32)
    weight[present], bias[present] = w, b
    return LinearProbe(weight=weight, bias=bias, mean=mean, scale=scale, c=float(c), solver=impl.name, sweep=sweep,
                       iterations=iters, fit_seconds=round(time.perf_counter() - t0, 3))


def _rows(a, idx: np.ndarray):
    """Row subset of a numpy array or a torch tensor (index moved to the tensor's device)."""
    if isinstance(a, np.ndarray):
        return a[idx]
    import torch

    return a[torch.as_tensor(idx, device=a.device)]


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    ks: tuple[int, ...] = (10, 20),
    temperature: float = 0.07,
    device="cpu",
    chunk: int = 1024,
) -> dict[int, float]:
    """DINO's weighted k-NN: cosine similarity of L2-normalised features; each of the k nearest training
    samples votes for its class with weight exp(sim / T). Returns {k: test accuracy}."""
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    bank = F.normalize(torch.as_tensor(np.asarray(train_x, dtype=np.float32), device=dev), dim=1)  # [Ntr, D]
    bank_y = torch.as_tensor(np.asarray(train_y, dtype=np.int64), device=dev)
    queries = F.normalize(torch.as_tensor(np.asarray(test_x, dtype=np.float32), device=dev), dim=1)  # [Nte, D]
    truth = torch.as_tensor(np.asarray(test_y, dtype=np.int64), device=dev)
    kmax = min(max(ks), bank.shape[0])
    correct = dict.fromkeys(ks, 0)
    with torch.inference_mode():
        for lo in range(0, queries.shape[0], chunk):
            q = queries[lo : lo + chunk]
            sim, idx = (q @ bank.T).topk(kmax, dim=1)  # [B, kmax], most similar first
            weights = (sim / temperature).exp()
            neigh = bank_y[idx]  # [B, kmax]
            for k in ks:
                kk = min(k, kmax)
                votes = torch.zeros(q.shape[0], num_classes, device=dev, dtype=weights.dtype)
                votes.scatter_add_(1, neigh[:, :kk], weights[:, :kk])
                correct[k] += int((votes.argmax(dim=1) == truth[lo : lo + chunk]).sum())
    n = max(1, queries.shape[0])
    return {k: correct[k] / n for k in ks}
