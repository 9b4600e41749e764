"""The one epoch loop (fedimg.engine.loop.EpochTrainer) on a toy task: the hooks, progress
reports, statistics, FedProx, the LR schedule, bf16 decision and exact resume."""

from __future__ import annotations

import copy

import pytest
import torch

from fedimg.engine.loop import (EpochTrainer, adamw, load_global_params, local_round, lr_factor, use_bf16,
                                warmup_cosine)

X = torch.linspace(-1, 1, 96).reshape(24, 4)
Y = X.sum(1, keepdim=True)


class ToyData:
    def __init__(self) -> None:
        self.state: dict = {}
        self.num_train = len(X)


class ToyConfig:
    epochs, amp = 3, "fp32"


class Regression(EpochTrainer):
    """Linear regression: batches of 2 rows from a shuffle, squared error, units = rows."""

    rate_key = "rows_per_s"

    def __init__(self, model, data=None, config=None, *, seed: int = 0) -> None:
        self.model, self.data, self.config = model, data, config or ToyConfig()
        self.device, self.bf16, self.epoch, self.steps_per_epoch = torch.device("cpu"), False, 0, 12
        self.optimizer = adamw(model.parameters(), fused=True, lr=0.05)
        self.scheduler = warmup_cosine(self.optimizer, steps_per_epoch=12, epochs=3, warmup_epochs=1, min_ratio=0.1)
        self.generator = torch.Generator().manual_seed(seed)

    def epoch_batches(self) -> list:
        order = torch.randperm(len(X), generator=self.generator)
        return [order[i:i + 2] for i in range(0, len(X), 2)]

    def step_loss(self, batch):
        with self.autocast():
            out = self.model(X[batch])
        return ((out.float() - Y[batch]) ** 2).mean(), len(batch)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 1)


def test_progress_reports_and_statistics():
    trainer = Regression(_model())
    steps: list = []
    stats = trainer.train_epoch(on_step=steps.append)
    assert list(stats) == ["loss", "lr", "rows_per_s", "seconds", "steps"] and stats["steps"] == 12
    assert [s["step"] for s in steps] == list(range(1, 13)) and all(s["rows_per_s"] > 0 for s in steps)
    # the running loss at the first, every 10th and the last step only (no host sync in between)
    assert [s["step"] for s in steps if s["loss"] is not None] == [1, 10, 12]
    assert steps[-1]["loss"] == pytest.approx(stats["loss"], rel=1e-12) and trainer.epoch == 1
    assert stats["lr"] == pytest.approx(0.05)  # end of the warm-up epoch: the peak
    trainer.loss_every, trainer.report_steps = 1, False
    steps.clear()
    stats = trainer.train_epoch(on_step=steps.append)
    assert all(s["loss"] is not None for s in steps) and "steps" not in stats


def test_training_learns_and_fedprox_pulls_towards_the_reference():
    drift = {}
    for mu in (0.0, 10.0):
        model = _model()
        ref = [p.detach().clone() for p in model.parameters()]
        trainer = Regression(model)
        first = trainer.train_epoch(prox_mu=mu, prox_ref=ref)["loss"]
        last = trainer.train_epoch(prox_mu=mu, prox_ref=ref)["loss"]
        drift[mu] = sum(float(((p.detach() - r) ** 2).sum()) for p, r in zip(model.parameters(), ref))
        if mu == 0.0:
            assert last < first
    assert drift[10.0] < drift[0.0]


def test_exact_resume_from_the_trainer_state():
    a = Regression(_model())
    a.train_epoch()
    state = copy.deepcopy(a.state_dict())  # as saved to disk: no tensors shared with ``a``
    weights = {k: v.clone() for k, v in a.model.state_dict().items()}
    b = Regression(_model(1), seed=7)
    load_global_params(b.model, weights)
    b.load_state_dict(state)
    assert b.epoch == 1 and b.scheduler.last_epoch == a.scheduler.last_epoch
    assert a.train_epoch()["loss"] == b.train_epoch()["loss"]
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))


def test_local_round_keeps_one_trainer_per_site():
    data, cfg, model = ToyData(), ToyConfig(), _model()
    m1 = local_round(model, data, cfg, Regression, "rows_per_s", epochs=1)
    trainer = data.state["trainer"]
    m2 = local_round(model, data, cfg, Regression, "rows_per_s", epochs=2)
    assert data.state["trainer"] is trainer and m1["epoch"] == 1 and m2["epoch"] == 3 and m2["epochs"] == 2
    assert set(m2) == {"epochs", "epoch", "loss", "lr", "seconds", "rows_per_s"} and m2["rows_per_s"] > 0


def test_one_schedule_and_one_bf16_decision():
    sched = warmup_cosine(adamw([torch.zeros(1, requires_grad=True)], lr=1.0), steps_per_epoch=4, epochs=3,
                          warmup_epochs=1, min_ratio=0.2)
    lrs = []
    for _ in range(12):
        lrs.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    assert lrs == pytest.approx([lr_factor(s, warmup_steps=4, total_steps=12, min_ratio=0.2) for s in range(12)])
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and lrs[-1] > 0.2
    # the warm-up never takes the whole schedule: 5 warm-up epochs of a 4-step run warm up over 3 steps
    one = warmup_cosine(adamw([torch.zeros(1, requires_grad=True)], lr=1.0), steps_per_epoch=4, epochs=1,
                        warmup_epochs=5, min_ratio=0.0)
    assert one.get_last_lr()[0] == pytest.approx(1 / 3)
    cpu = torch.device("cpu")
    cfg = type("C", (), {})
    for amp, expected in (("fp32", False), ("bf16", True)):
        cfg.amp = amp
        assert use_bf16(cfg, cpu) is expected
    cfg.amp = "auto"
    assert isinstance(use_bf16(cfg, cpu), bool)
