"""The generic epoch driver (fedimg.engine.driver) on a toy trainer: run folder, best/last
checkpoints, metrics, TensorBoard tags, exact resume (also before the first scored epoch)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fedimg.engine.driver import EpochDriver, EpochHooks, is_new_best
from fedimg.engine.loop import ResumableTrainer
from fedimg.errors import ConfigError, InputError

DEV = torch.device("cpu")
FINGERPRINT = "toy-data"


class ToyTrainer(ResumableTrainer):
    """Linear regression y = sum(x) + noise; draws batches from its generator and the noise
    from torch's global RNG, so exact resume needs both restored."""

    def __init__(self, model: torch.nn.Module, seed: int = 0, steps: int = 3) -> None:
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0 / (1.0 + 0.1 * s))
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.steps_per_epoch = steps
        self.bf16 = False

    def train_epoch(self, *, on_step=None) -> dict:
        total = 0.0
        for i in range(self.steps_per_epoch):
            x = torch.randn(8, 4, generator=self.generator)
            y = x.sum(1, keepdim=True) + 0.1 * torch.randn(8, 1)
            loss = ((self.model(x) - y) ** 2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += float(loss.detach())
            if on_step is not None:
                on_step({"loss": total / (i + 1)})
        self.epoch += 1
        return {"loss": total / self.steps_per_epoch, "lr": float(self.optimizer.param_groups[0]["lr"]),
                "steps": self.steps_per_epoch}


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 1)
    return model, ToyTrainer(model, seed)


X_VAL = torch.linspace(-1, 1, 40).reshape(10, 4)


def _val_loss(model) -> float:
    with torch.no_grad():
        return float(((model(X_VAL) - X_VAL.sum(1, keepdim=True)) ** 2).mean())


def _hooks(model, *, every: int = 1, rows: list | None = None, **kw) -> EpochHooks:
    def evaluate(epoch: int) -> dict:
        return {"val_loss": _val_loss(model)} if epoch % every == 0 else {}

    return EpochHooks(key="val_loss", mode="min", evaluate=evaluate,
                      meta=lambda epoch, row: {"epoch": epoch, "metrics": row, "data_fingerprint": FINGERPRINT},
                      info={"toy": True}, step_postfix=lambda s: {"loss": f"{s['loss']:.3f}"},
                      log_epoch=(rows.append if rows is not None else None), **kw)


def _fit(out, *, epochs=4, every=1, resume=False, stop_after=None, rows=None, **kw):
    run = EpochDriver(out, resume=resume)
    model, trainer = _setup()
    return run.fit(model, trainer, _hooks(model, every=every, rows=rows, **kw), config={"epochs": epochs, "toy": 1},
                   fingerprint=FINGERPRINT, epochs=epochs, device=DEV, stop_after=stop_after, progress=False)


def _epochs(out) -> list:
    return json.loads((out / "metrics.json").read_text())["epochs"]


def test_is_new_best_rules():
    assert is_new_best(0.7, {"epoch": 3, "auc": 0.6}, "auc") is True
    assert is_new_best(0.6, {"epoch": 3, "auc": 0.6}, "auc") is False  # ties keep the earlier epoch
    assert is_new_best(0.5, {"epoch": 3, "auc": 0.6}, "auc") is False
    assert is_new_best(0.5, {"epoch": 3, "loss": 0.6}, "loss", "min") is True
    assert is_new_best(0.7, {"epoch": 3, "loss": 0.6}, "loss", "min") is False
    assert is_new_best(None, {"epoch": 0, "auc": -math.inf}, "auc") is False  # unscored epoch
    assert is_new_best(math.nan, {"epoch": 3, "auc": 0.9}, "auc") is True  # no validation: last is best
    assert is_new_best(0.1, {"epoch": 0, "auc": math.nan}, "auc") is True  # nothing best yet
    assert is_new_best(0.9, {"epoch": 2, "auc": math.nan}, "auc") is False  # a NaN best stays
    with pytest.raises(ConfigError, match="mode"):
        EpochHooks(key="auc", mode="up", evaluate=dict, meta=lambda e, r: {})


def test_run_folder_best_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    rows: list = []
    summary = _fit(out, epochs=4, rows=rows)
    for name in ("config.json", "metrics.json", "telemetry.json", "model.safetensors", "model.json",
                 "last.safetensors", "last.json", "last.state.safetensors", "last.state.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text()) == {"epochs": 4, "toy": 1}
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["epochs", "best", "device", "bf16", "toy"]
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4] and rows == metrics["epochs"]
    assert list(metrics["epochs"][0]) == ["epoch", "loss", "lr", "steps", "val_loss"]
    best = min(metrics["epochs"], key=lambda e: e["val_loss"])
    assert metrics["best"] == {"epoch": best["epoch"], "val_loss": best["val_loss"]} == summary["best"]
    assert json.loads((out / "model.json").read_text())["epoch"] == best["epoch"]
    assert json.loads((out / "last.json").read_text())["epoch"] == 4 == summary["epoch"] == summary["epochs_run"]
    assert summary["last"] == metrics["epochs"][-1] and summary["run"] == str(out)
    ea = EventAccumulator(str(next((out / "tb").glob("events*"))))
    ea.Reload()
    assert sorted(ea.Tags()["scalars"]) == ["train/loss", "train/lr", "val/val_loss"]  # ints (steps) are left out
    assert [e.value for e in ea.Scalars("val/val_loss")] == pytest.approx([e["val_loss"] for e in metrics["epochs"]])


def test_resume_equals_uninterrupted_run_even_before_the_first_scored_epoch(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _fit(a, epochs=4, every=2)
    _fit(b, epochs=4, every=2, stop_after=1)  # stops before any validation: best is still "none"
    assert json.loads((b / "metrics.json").read_text())["best"] == {"epoch": 0, "val_loss": None}
    assert not (b / "model.safetensors").exists()
    with pytest.raises(InputError, match="--resume"):
        _fit(b, epochs=4, every=2)
    s = _fit(b, epochs=4, every=2, resume=True, stop_after=2)
    assert s["epochs_run"] == 2 and s["epoch"] == 3
    _fit(b, epochs=4, every=2, resume=True)
    assert _epochs(a) == _epochs(b)  # the toy's rows hold no timings: equal to the bit
    for name in ("model.safetensors", "last.safetensors", "last.state.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert json.loads((a / "metrics.json").read_text())["best"] == json.loads((b / "metrics.json").read_text())["best"]
    assert "val_loss" not in _epochs(a)[0] and "val_loss" in _epochs(a)[1]
    with pytest.raises(InputError, match="no training state"):
        _fit(tmp_path / "c", resume=True)


def test_unscorable_runs_keep_the_last_epoch_as_best(tmp_path):
    out = tmp_path / "noval"
    summary = _fit(out, epochs=3, score=lambda row: math.nan)
    assert summary["best"]["epoch"] == 3 and math.isnan(summary["best"]["val_loss"])
    assert json.loads((out / "model.json").read_text())["epoch"] == 3
    # resumed: the NaN best read back from JSON (null) does not break the comparison
    _fit(tmp_path / "r", epochs=3, stop_after=1, score=lambda row: math.nan)
    s = _fit(tmp_path / "r", epochs=3, resume=True, score=lambda row: math.nan)
    assert s["best"]["epoch"] == 3 and _epochs(tmp_path / "r") == _epochs(out)
    done = _fit(tmp_path / "r", epochs=3, resume=True, score=lambda row: math.nan)  # nothing left to run
    assert done["epochs_run"] == 0 and done["best"]["epoch"] == 3 and math.isnan(done["best"]["val_loss"])
