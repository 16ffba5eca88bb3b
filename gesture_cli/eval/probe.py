"""Linear probes on frozen features: the logistic-regression protocol of the DINOv2/DINOv3 evaluation
code, plus the temperature-weighted k-NN classifier of DINO.

Three layers, as in `dinov2/eval/log_regression.py`:
    run_probes(cfg, run)            every backbone under features/, one run-dir step each + a summary step
    probe_backbone(cfg, run, name)  one backbone: load features, fit, score, write probe/<name>/
    fit_probe(x, y, ...)            standardise, choose C on a held-out slice, refit: a `LinearProbe`

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
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, UsageError, unknown_choice

CLASSIFIER_KIND = "linear-probe"
PROBE_COMMAND = "probe"
SUMMARY_COMMAND = "probe-summary"
SOLVER_CHOICES = ("auto", "sklearn", "torch")
SHORT_GRID = (-4.0, 3.0, 8)  # 10^linspace(-4, 3, 8): the default C sweep
FULL_GRID = (-6.0, 5.0, 45)  # 10^linspace(-6, 5, 45): the DINOv2/DINOv3 sweep (--full-grid)
SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1", "knn20_accuracy")  # bars of summary.png
ABSENT_CLASS_BIAS = -1.0e4  # bias of a class with no training sample: never predicted, probability ~0
SMALL_PROBLEM_FLOPS = 2e7  # N*D*K below which the sklearn solver runs single-threaded BLAS


@dataclass(frozen=True)
class ProbeConfig:
    backbones: tuple[str, ...] = ()  # folders under features/; empty = every one with both splits extracted
    train_split: str = "train"  # split the probe (and the k-NN bank) is fit on
    test_split: str = "test"  # split the probe is scored on
    c: float | None = None  # fixed inverse L2 strength (scikit-learn's C); None = choose on a held-out slice
    full_grid: bool = False  # sweep C over 10^linspace(-6, 5, 45) (DINO) instead of 10^linspace(-4, 3, 8)
    val_fraction: float = 0.2  # stratified fraction of the training split held out to choose C
    solver: str = "auto"  # auto | sklearn | torch (auto: torch on CUDA, sklearn on CPU)
    max_iter: int = 1000  # L-BFGS iterations per fit
    tol: float = 1e-4  # L-BFGS stop: max |gradient| of the mean objective (scikit-learn's tol)
    knn_k: tuple[int, ...] = (10, 20)  # neighbours of the k-NN classifier (one accuracy column each)
    knn_temperature: float = 0.07  # DINO's T: neighbour votes weigh exp(cosine / T)
    tsne: bool = False  # also render probe/<backbone>/tsne.png of the test features
    tsne_points: int = 2000  # at most this many test points in the t-SNE (stratified subsample)
    seed: int = 0  # held-out slice and t-SNE seed

    def validate(self) -> None:
        if self.solver not in SOLVER_CHOICES:
            raise unknown_choice("solver", self.solver, SOLVER_CHOICES)
        if self.c is not None and not self.c > 0:
            raise UsageError(f"--c must be positive, got {self.c}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if self.max_iter < 1:
            raise UsageError("--max-iter must be at least 1")
        if not self.knn_k or any(k < 1 for k in self.knn_k):
            raise UsageError(f"knn_k must be positive neighbour counts, got {list(self.knn_k)}")
        if not self.knn_temperature > 0:
            raise UsageError("knn_temperature must be positive")
        if self.tsne_points < 10:
            raise UsageError("tsne_points must be at least 10")
        if self.train_split == self.test_split:
            raise UsageError(f"--train-split and --test-split are both '{self.train_split}'; the probe must be scored on held-out data")


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


# ----------------------------------------------------------------------------------------------
# Classifier artifact
# ----------------------------------------------------------------------------------------------


def save_classifier(path: Path, probe: LinearProbe, *, meta: dict) -> None:
    """classifier.safetensors: weight, bias, scaler mean/scale; `meta` (classes, C, backbone, pool...) in the header."""
    import torch

    from gesture_cli.core.artifacts import save_tensors

    tensors = {
        "weight": torch.from_numpy(probe.weight),
        "bias": torch.from_numpy(probe.bias),
        "scaler_mean": torch.from_numpy(probe.mean),
        "scaler_scale": torch.from_numpy(probe.scale),
    }
    save_tensors(path, tensors, kind=CLASSIFIER_KIND, meta={**meta, "c": probe.c, "solver": probe.solver,
                                                             "feature_dim": probe.feature_dim, "num_classes": probe.num_classes})


def load_classifier(path: Path) -> tuple[LinearProbe, dict]:
    from gesture_cli.core.artifacts import load_tensors

    t, meta = load_tensors(Path(path), kind=CLASSIFIER_KIND)
    missing = [k for k in ("weight", "bias", "scaler_mean", "scaler_scale") if k not in t]
    if missing:
        raise ArtifactError(f"{path}: missing tensors {', '.join(missing)}; rerun `gx probe --force`")
    probe = LinearProbe(
        weight=t["weight"].float().numpy(), bias=t["bias"].float().numpy(), mean=t["scaler_mean"].float().numpy(),
        scale=t["scaler_scale"].float().numpy(), c=float(meta.get("c", 0.0)), solver=str(meta.get("solver", "")),
    )
    classes = meta.get("classes") or []
    if len(classes) != probe.num_classes:
        raise ArtifactError(f"{path}: {probe.num_classes} output classes but {len(classes)} class names; rerun `gx probe --force`")
    return probe, meta


def classifier_path(run, backbone: str) -> Path:
    from gesture_cli.models.features import backbone_dirname

    return run.path("probe", backbone_dirname(backbone), "classifier.safetensors")


def require_classifier(run, backbone: str | None) -> tuple[str, Path]:
    """(backbone folder name, classifier path) of a probe in the run dir, with errors that say what to run.

    backbone None picks the only probed backbone, and is a UsageError when there are several.
    """
    from gesture_cli.models.features import backbone_dirname

    probed = sorted(p.parent.name for p in run.path("probe").glob("*/classifier.safetensors"))
    if backbone is None:
        if len(probed) == 1:
            return probed[0], classifier_path(run, probed[0])
        if not probed:
            raise ArtifactError(f"no probe classifier in {run.path('probe')}; run `gx probe -r {run.root}` first")
        raise UsageError(f"{len(probed)} probed backbones in {run.root}: pass --backbone, one of {', '.join(probed)}")
    path = classifier_path(run, backbone)
    if not path.is_file():
        hint = f" (probed: {', '.join(probed)})" if probed else ""
        raise ArtifactError(f"{path}: no probe classifier for backbone '{backbone}'{hint}; run `gx probe --backbones {backbone} -r {run.root}` first")
    return backbone_dirname(backbone), path


# ----------------------------------------------------------------------------------------------
# Run-dir steps
# ----------------------------------------------------------------------------------------------


def discover_backbones(run, *, train_split: str = "train", test_split: str = "test") -> list[str]:
    """Folders under features/ that hold both splits, sorted by name."""
    root = run.path("features")
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and (p / f"{train_split}.safetensors").is_file() and (p / f"{test_split}.safetensors").is_file()
    )


def _features_meta(run, name: str) -> dict:
    from gesture_cli.core.artifacts import load_json

    path = run.path("features", name, "meta.json")
    return load_json(path, kind="features-meta") if path.is_file() else {}


def _dataset_seed(run, name: str) -> int | None:
    entry = run.last_ok("extract-features", output=f"features/{name}")
    seed = ((entry or {}).get("config") or {}).get("seed")
    return int(seed) if seed is not None else None


def probe_backbone(cfg: ProbeConfig, run, name: str, *, device, force: bool = False, argv=None,
                   on_event: Callable[[str], None] | None = None) -> dict:
    """Probe one backbone's features into probe/<name>/; returns its metrics (+ `cached`)."""
    from gesture_cli.core.artifacts import load_json, save_json
    from gesture_cli.core.config import config_to_dict
    from gesture_cli.eval.classify import classification_metrics
    from gesture_cli.models.features import load_features
    from gesture_cli.viz.plots import render_confusion, render_tsne

    solver = resolve_solver(cfg.solver, device)
    out_rel = f"probe/{name}"
    key_cfg = {k: v for k, v in config_to_dict(cfg).items() if k not in ("backbones",)}
    key_cfg.update(backbone=name, solver=solver, device=str(device) if solver == "torch" else "cpu")
    feats_dir = run.path("features", name)
    inputs = [feats_dir / f"{cfg.train_split}.safetensors", feats_dir / f"{cfg.test_split}.safetensors"]
    step = run.begin(PROBE_COMMAND, config=key_cfg, outputs=[out_rel], inputs=inputs, argv=argv, force=force)
    if step.cached:
        return {**load_json(run.path(out_rel, "metrics.json"), kind="probe-metrics"), "cached": True}

    xtr_t, ytr_t, meta_tr = load_features(run, name, cfg.train_split)
    xte_t, yte_t, meta_te = load_features(run, name, cfg.test_split)
    xtr, ytr, xte, yte = xtr_t.numpy(), ytr_t.numpy(), xte_t.numpy(), yte_t.numpy()
    classes = list(meta_tr.get("classes") or [])
    if xtr.shape[1] != xte.shape[1]:
        raise ArtifactError(
            f"{inputs[0]} has {xtr.shape[1]}-d features but {inputs[1]} has {xte.shape[1]}-d; "
            f"re-extract both splits with one `gx extract-features --backbone {name} --force`"
        )
    if classes != list(meta_te.get("classes") or []):
        raise ArtifactError(f"{feats_dir}: the {cfg.train_split} and {cfg.test_split} splits have different class lists; re-extract them together")
    if not classes:
        classes = [str(i) for i in range(int(max(ytr.max(), yte.max())) + 1)]
    fmeta = _features_meta(run, name)
    grid = c_grid(full=cfg.full_grid)
    say = on_event or (lambda _msg: None)

    with step:
        out = step.stage(out_rel)
        what = f"C = {cfg.c:g}" if cfg.c is not None else f"C from {len(grid)} values in [{grid[0]:.0e}, {grid[-1]:.0e}]"
        say(f"{name}: {len(xtr)} train / {len(xte)} test x {xtr.shape[1]}-d, {len(classes)} classes; {solver} solver, {what}")
        probe = fit_probe(
            xtr, ytr, num_classes=len(classes), grid=grid, c=cfg.c, val_fraction=cfg.val_fraction, solver=solver,
            device=device, max_iter=cfg.max_iter, tol=cfg.tol, seed=cfg.seed,
        )
        pred = probe.predict(xte)
        metrics = classification_metrics(yte, pred, classes)
        knn = knn_accuracy(xtr, ytr, xte, yte, num_classes=len(classes), ks=tuple(cfg.knn_k), temperature=cfg.knn_temperature,
                           device=device)
        backbone_desc = meta_tr.get("backbone") or fmeta.get("backbone") or {"name": name}
        pool = meta_tr.get("pool") or fmeta.get("pool") or "cls"
        result = {
            "backbone": name,
            "family": backbone_desc.get("family"),
            "dataset": fmeta.get("dataset"),
            "pool": pool,
            "feature_dim": int(xtr.shape[1]),
            "num_classes": len(classes),
            "classes": classes,
            "train_samples": int(len(xtr)),
            "test_samples": int(len(xte)),
            "c": probe.c,
            "c_chosen_by": "fixed (--c)" if cfg.c is not None else f"accuracy on a {cfg.val_fraction:.0%} stratified slice of '{cfg.train_split}'",
            "solver": probe.solver,
            "iterations": probe.iterations,
            "converged": probe.iterations < cfg.max_iter,  # the final fit stopped on the gradient tolerance
            "fit_seconds": probe.fit_seconds,
            "sweep": probe.sweep,
            **{k: v for k, v in metrics.items() if k not in ("per_class", "confusion")},
            **{f"knn{k}_accuracy": round(v, 6) for k, v in knn.items()},
            "knn_temperature": cfg.knn_temperature,
            "per_class": metrics["per_class"],
            "confusion": metrics["confusion"],
        }
        save_classifier(
            out / "classifier.safetensors", probe,
            meta={"classes": classes, "backbone": backbone_desc, "pool": pool, "dataset": fmeta.get("dataset"),
                  "dataset_seed": _dataset_seed(run, name), "train_split": cfg.train_split, "test_split": cfg.test_split,
                  "features_dtype": fmeta.get("dtype"), "image_size": backbone_desc.get("image_size")},
        )
        save_json(out / "metrics.json", result, kind="probe-metrics")
        render_confusion(np.asarray(metrics["confusion"]), classes, out / "confusion.png",
                         title=f"{name} linear probe: accuracy {metrics['accuracy']:.3f} (C = {probe.c:.3g})")
        if cfg.tsne:
            say(f"{name}: t-SNE of {min(len(xte), cfg.tsne_points)} test points")
            render_tsne(xte, yte, classes, out / "tsne.png", max_points=cfg.tsne_points, seed=cfg.seed, title=f"{name}: t-SNE of test features")
        step.metrics.update({k: result[k] for k in ("accuracy", "macro_f1", "weighted_f1", "c", "fit_seconds")})
        step.metrics["knn_top1"] = result.get(f"knn{max(cfg.knn_k)}_accuracy")
    return {**result, "cached": False}


SUMMARY_COLUMNS = (
    "backbone", "family", "pool", "feature_dim", "train_samples", "test_samples", "c", "accuracy", "macro_precision",
    "macro_recall", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1",
)


def summary_rows(results: list[dict], knn_k: tuple[int, ...]) -> list[dict]:
    cols = list(SUMMARY_COLUMNS) + [f"knn{k}_accuracy" for k in knn_k] + ["solver", "fit_seconds"]
    return [{c: r.get(c) for c in cols} for r in results]


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _markdown(rows: list[dict]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if v < 0.01 or v >= 1000 or not 0 <= v <= 1 else f"{v:.4f}"
        return "" if v is None else str(v)

    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "# Linear probes\n\n" + "\n".join(lines) + "\n"


def run_probes(cfg: ProbeConfig, run, *, device="auto", force: bool = False, argv=None,
               on_event: Callable[[str], None] | None = None) -> dict:
    """Probe every requested backbone, then write probe/summary.{csv,md,png}.

    Returns {"rows": summary rows, "results": per-backbone metrics, "cached": [names reused],
    "summary_cached": bool, "outputs": [paths]}.
    """
    from gesture_cli.core.device import resolve_device
    from gesture_cli.models.features import backbone_dirname
    from gesture_cli.viz.plots import render_grouped_bars

    names = [backbone_dirname(b) for b in cfg.backbones] or discover_backbones(run, train_split=cfg.train_split, test_split=cfg.test_split)
    if not names:
        raise ArtifactError(
            f"no extracted features in {run.path('features')} (need {cfg.train_split}.safetensors and {cfg.test_split}.safetensors "
            f"per backbone); run `gx extract-features --backbone NAME -r {run.root}` first"
        )
    for given, name in zip(cfg.backbones or names, names, strict=True):
        for split in (cfg.train_split, cfg.test_split):
            path = run.path("features", name, f"{split}.safetensors")
            if not path.is_file():
                raise ArtifactError(f"{path}: no '{split}' features for backbone '{given}'; run `gx extract-features --backbone {given} -r {run.root}` first")
    names = list(dict.fromkeys(names))
    dev = resolve_device(device)
    results = [probe_backbone(cfg, run, n, device=dev, force=force, argv=argv, on_event=on_event) for n in names]
    rows = summary_rows(results, tuple(cfg.knn_k))
    outs = ["probe/summary.csv", "probe/summary.md", "probe/summary.png"]
    step = run.begin(SUMMARY_COMMAND, config={"backbones": names, "knn_k": list(cfg.knn_k)}, outputs=outs,
                      inputs=[run.path("probe", n, "metrics.json") for n in names], argv=argv, force=force)
    if not step.cached:
        with step:
            _write_csv(step.stage(outs[0], is_dir=False), rows)
            step.stage(outs[1], is_dir=False).write_text(_markdown(rows), encoding="utf-8")
            classes = _features_meta(run, names[0]).get("classes") or []
            render_grouped_bars(rows, [m for m in SUMMARY_METRICS if m in rows[0]], step.stage(outs[2], is_dir=False),
                                title="Linear probes on frozen features (test split)",
                                chance=1.0 / len(classes) if classes else None)
            best = max(rows, key=lambda r: r["accuracy"] or 0.0)
            step.metrics.update({"backbones": len(rows), "accuracy": best["accuracy"], "best_backbone": best["backbone"]})
    return {"rows": rows, "results": results, "cached": [r["backbone"] for r in results if r.get("cached")],
            "summary_cached": step.cached, "outputs": [f"probe/{n}" for n in names] + outs}

