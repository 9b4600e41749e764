"""A tiny task (logistic regression on tabular data) to exercise federation in seconds.

It implements the same task protocol as the imaging tasks (``fedimg.tasks``) so that
the NVFlare plumbing (client script, aggregator, resume, POC reliability tests,
benchmarks) can be run and tested without 3-D training. Each site folder holds
``toy.npz`` with ``x`` (N, F) float32 and ``y`` (N,) {0, 1}; :func:`make_sites` writes
non-IID sites from one shared linear rule.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> sites = make_sites(root, n_sites=2, n=64, seed=0)
>>> cfg = config_from_dict({"features": 8})
>>> data = load_site(sites[0], cfg, "cpu")
>>> m = build_model(cfg)
>>> metrics, n = train_one_round(m, data, cfg, epochs=1)
>>> n, sorted(evaluate(m, data, cfg))
(48, ['accuracy', 'loss'])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedimg.errors import ConfigError, InputError

from fedimg.tasks import FunctionTask

__all__ = ["TASK", "KEY_METRIC", "ToyConfig", "ToyData", "config_from_dict", "build_model", "load_site",
           "train_one_round", "evaluate", "make_sites"]

KEY_METRIC = "accuracy"


@dataclass(frozen=True, kw_only=True)
class ToyConfig:
    """Hyper-parameters of the toy task."""

    features: int = 8
    hidden: int = 0
    norm: bool = False
    epochs: int = 1
    lr: float = 0.5
    batch_size: int = 16
    val_fraction: float = 0.25
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.features < 1 or self.epochs < 1 or self.batch_size < 1 or self.hidden < 0:
            raise ConfigError("toy task: features, epochs and batch_size must be >= 1, hidden >= 0")
        if self.norm and not self.hidden:
            raise ConfigError("toy task: norm (a BatchNorm after the hidden layer) needs hidden >= 1")
        if not 0 < self.val_fraction < 1:
            raise ConfigError("toy task: val_fraction must lie in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ToyData:
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    source: str = ""

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])


def config_from_dict(d: dict[str, Any]) -> ToyConfig:
    known = {f.name for f in dataclasses.fields(ToyConfig)}
    return ToyConfig(**{k: v for k, v in dict(d).items() if k in known})


def build_model(config: ToyConfig) -> Any:
    import torch

    torch.manual_seed(config.seed)
    if config.hidden:
        norm = [torch.nn.BatchNorm1d(config.hidden)] if config.norm else []  # FedBN's site-local layer
        return torch.nn.Sequential(
            torch.nn.Linear(config.features, config.hidden), *norm, torch.nn.ReLU(), torch.nn.Linear(config.hidden, 1)
        )
    return torch.nn.Sequential(torch.nn.Linear(config.features, 1))


def load_site(data_dir: str | Path, config: ToyConfig, device: Any = "cpu") -> ToyData:
    import torch

    path = Path(data_dir) / "toy.npz"
    if not path.is_file():
        raise InputError(path, "is missing; create toy sites with fedimg.tasks.toy.make_sites")
    with np.load(path) as z:
        x, y = np.asarray(z["x"], np.float32), np.asarray(z["y"], np.float32)
    if x.ndim != 2 or x.shape[1] != config.features or y.shape != (x.shape[0],):
        raise InputError(path, f"expected x (N, {config.features}) and y (N,); got {x.shape} and {y.shape}")
    n_val = max(1, int(round(len(x) * config.val_fraction)))
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    return ToyData(t(x[n_val:]), t(y[n_val:]), t(x[:n_val]), t(y[:n_val]), source=str(data_dir))


def train_one_round(model: Any, data: ToyData, config: ToyConfig, *, epochs: int | None = None,
                    global_params: dict[str, Any] | None = None, prox_mu: float = 0.0) -> tuple[dict[str, float], int]:
    """SGD on the site's training rows; FedProx term ``mu/2 ||w - w_global||^2`` if ``prox_mu``."""
    import torch

    if global_params is not None:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in global_params.items()})
    model.train()
    ref = [p.detach().clone() for p in model.parameters()] if prox_mu > 0 else None
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    g = torch.Generator().manual_seed(config.seed)
    n = data.num_train
    loss_sum, steps = 0.0, 0
    for _ in range(config.epochs if epochs is None else int(epochs)):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, config.batch_size):
            idx = order[i : i + config.batch_size]
            logits = model(data.x_train[idx]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, data.y_train[idx])
            if ref is not None:
                loss = loss + 0.5 * prox_mu * sum(((p - r) ** 2).sum() for p, r in zip(model.parameters(), ref))
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            steps += 1
    return {"loss": loss_sum / max(steps, 1), "steps": float(steps)}, n


def evaluate(model: Any, data: ToyData, config: ToyConfig) -> dict[str, float]:
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(data.x_val).squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, data.y_val)
        acc = ((logits > 0).float() == data.y_val).float().mean()
    return {"accuracy": float(acc), "loss": float(loss)}


def make_sites(root: str | Path, *, n_sites: int = 3, n: int = 128, features: int = 8, seed: int = 0,
               shift: float = 1.0) -> list[Path]:
    """Write ``root/site-K/toy.npz`` for K = 1..n_sites: one linear rule, site-shifted inputs."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=features).astype(np.float32)
    out = []
    for k in range(n_sites):
        x = (rng.normal(size=(n, features)) + shift * (k - (n_sites - 1) / 2)).astype(np.float32)
        y = (x @ w + 0.25 * rng.normal(size=n) > shift * (k - (n_sites - 1) / 2) * w.sum()).astype(np.float32)
        d = Path(root) / f"site-{k + 1}"
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "toy.npz", x=x, y=y)
        out.append(d)
    return out


#: The registered task (:func:`fedimg.tasks.get_task` returns it).
TASK = FunctionTask(name="toy", key_metric=KEY_METRIC, config_from_dict=config_from_dict, build_model=build_model,
                    load_site=load_site, train_one_round=train_one_round, evaluate=evaluate)
