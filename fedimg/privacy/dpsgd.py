"""Patient-level DP-SGD at a site: Opacus per-sample clipping + Gaussian noise, and its accountant.

:class:`DPConfig` holds what a user asks for (a target ε, or a noise multiplier; δ; the
per-sample clipping norm C; the accountant). :class:`PatientDP` is handed to a trainer
(:meth:`fedimg.engine.loop.EpochTrainer.make_private`, which calls :meth:`PatientDP.attach`):
it wraps the trainer's model for per-sample gradients (Opacus's ExpandedWeights module,
set as ``trainer.forward``; ``trainer.model`` and its state-dict keys do not change) and its
optimizer in ``DPOptimizer`` (clip each sample's gradient to C, sum, add N(0, (zC)²),
divide by the expected batch size), and attaches an Opacus accountant to every step.

How batches are drawn, and why the accountant matches it. The cached training set has
``n`` units (3-D task: cases, i.e. patients; tile task: tiles). Under DP every step draws
its batch by **Poisson sampling**: each unit joins independently with probability
``q = batch_size / n`` (:meth:`PatientDP.draw`, from the site's own seeded generator;
the batch size varies and may be empty: an empty step still adds noise and is counted).
The 3-D task then takes one random crop of each sampled case, so a patient contributes
at most one sample per step; that is the sampled Gaussian mechanism the RDP/PRV
accountant composes with ``(q, z)`` once per step. Over a run the site accounts all of its
own local steps (every epoch, every round). With a target ε the noise ``z`` is solved
(``opacus.accountants.utils.get_noise_multiplier``) for the planned total
(``total_epochs x steps_per_epoch``); the site refuses to step once that total is spent
(its budget), says so in the log and in ``dp_budget_spent``. On the tile task the unit is
one tile: the guarantee is per patient only where a patient contributes one tile. The
sampling and noise come from a seeded ``torch.Generator`` (reproducible runs), not Opacus's
``secure_mode`` CSPRNG: fine for research, not a hardened release against floating-point
attacks on the noise.

>>> cfg = DPConfig(epsilon=8.0, delta=1e-5, max_grad_norm=1.0)
>>> z = cfg.noise_for(sample_rate=0.1, steps=100)
>>> 0.5 < z < 1.5, round(epsilon_of(noise_multiplier=z, sample_rate=0.1, steps=100, delta=1e-5), 1) <= 8.0
(True, True)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

from fedimg.errors import ConfigError

__all__ = ["DPConfig", "PatientDP", "epsilon_of", "dp_metric_names"]

log = logging.getLogger(__name__)


def dp_metric_names() -> tuple[str, ...]:
    """The metric names a DP site reports (the server's audit accepts these, ``train_`` prefixed)."""
    return ("dp_epsilon", "dp_delta", "dp_noise_multiplier", "dp_max_grad_norm", "dp_sample_rate", "dp_steps",
            "dp_budget_spent")


def epsilon_of(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """ε after ``steps`` Poisson-sampled Gaussian steps ``(q, z)`` with Opacus's accountant."""
    from opacus.accountants import create_accountant

    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    acc = create_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=delta))


@dataclass(frozen=True, kw_only=True)
class DPConfig:
    """Patient-level DP-SGD settings.

    ``epsilon``: target ε for the site's whole run (the noise is solved for it), or ``None``
    with ``noise_multiplier`` set (ε is then reported, not capped). ``delta``: δ.
    ``max_grad_norm``: the per-sample clipping norm C (``inf``: no clipping, only with noise 0,
    the identity check). ``accountant``: ``"rdp"`` or ``"prv"``. ``seed``: the sampling and
    noise generator's seed.
    """

    epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: str = "rdp"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError("DP-SGD needs exactly one of a target epsilon (--dp-epsilon) or a noise multiplier "
                              "(--dp-noise-multiplier)")
        if self.epsilon is not None and not (0 < self.epsilon < math.inf):
            raise ConfigError(f"--dp-epsilon must be a positive finite number, got {self.epsilon}")
        if self.noise_multiplier is not None and not (0 <= self.noise_multiplier < math.inf):
            raise ConfigError(f"--dp-noise-multiplier must be >= 0, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"--dp-delta must be in (0, 1), got {self.delta}")
        if not self.max_grad_norm > 0:
            raise ConfigError(f"--dp-max-grad-norm must be > 0, got {self.max_grad_norm}")
        if math.isinf(self.max_grad_norm) and self.noise_multiplier != 0:
            raise ConfigError("--dp-max-grad-norm inf (no clipping) is allowed only with noise 0 (no privacy)")
        if self.accountant not in ("rdp", "prv"):
            raise ConfigError(f"--dp-accountant must be rdp or prv, got {self.accountant!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown DP settings {unknown}; known: {sorted(names)}")
        return cls(**d)

    def noise_for(self, *, sample_rate: float, steps: int) -> float:
        """The noise multiplier: given, or solved for ``epsilon`` over ``steps`` steps at ``sample_rate``."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        from opacus.accountants.utils import get_noise_multiplier

        return float(get_noise_multiplier(target_epsilon=self.epsilon, target_delta=self.delta,
                                          sample_rate=sample_rate, steps=max(1, steps), accountant=self.accountant))


class PatientDP:
    """DP-SGD for one site's trainer (see the module docstring); one instance per site run.

    ``total_epochs``: the epochs the budget covers (``fedimg train``: the config's epochs;
    a federation: rounds x local epochs). ``spent_epochs``: epochs already trained under this
    budget before this process (a resumed federation): counted as spent at :meth:`attach`.
    """

    def __init__(self, config: DPConfig, *, total_epochs: int, spent_epochs: int = 0) -> None:
        if total_epochs < 1 or not 0 <= spent_epochs:
            raise ConfigError(f"total_epochs must be >= 1 and spent_epochs >= 0, got {total_epochs}, {spent_epochs}")
        self.config, self.total_epochs, self.spent_epochs = config, int(total_epochs), int(spent_epochs)
        self.n = self.batch_size = self.max_steps = 0
        self.sample_rate = self.noise_multiplier = 0.0
        self.accountant = self.optimizer = self.generator = None
        self._warned = False

    def attach(self, trainer: Any, *, units: int, batch_size: int) -> None:
        """Make ``trainer`` private: its optimizer becomes a ``DPOptimizer`` with an accountant.

        ``units``: the size of the cached training set; ``batch_size``: the expected batch.
        """
        import torch
        from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
        from opacus.accountants import create_accountant
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        cfg = self.config
        trainer.model.train()  # the validator asks for training mode (a site evaluates first)
        errors = ModuleValidator.validate(trainer.model, strict=False)
        if errors:
            first = str(errors[0]).split(". ")[0]
            raise ConfigError(f"{type(trainer.model).__name__} cannot be trained with DP-SGD ({first}); use a model "
                              "with GroupNorm/InstanceNorm (tile task: a resnet model with norm \"group\")")
        if units < 1:
            raise ConfigError("DP-SGD needs at least one training case")
        self.n, self.batch_size = int(units), min(int(batch_size), int(units))
        self.sample_rate = self.batch_size / self.n
        planned = self.total_epochs * int(trainer.steps_per_epoch)
        self.noise_multiplier = cfg.noise_for(sample_rate=self.sample_rate, steps=planned)
        self.max_steps = planned if cfg.epsilon is not None else 0  # 0: no cap (ε reported)
        self.generator = torch.Generator(device=trainer.device).manual_seed(int(cfg.seed))
        for m in trainer.model.modules():  # in-place activations break the per-sample backward hooks
            if getattr(m, "inplace", False) is True:
                m.inplace = False
        # ExpandedWeights (torch's per-sample-gradient mode) rather than hooks: MONAI's blocks
        # add residuals in place, which backward hooks refuse; the trainer calls this wrapper
        self.grad_sample_module = GradSampleModuleExpandedWeights(trainer.model, loss_reduction="mean")
        trainer.forward = self.grad_sample_module
        self.optimizer = DPOptimizer(trainer.optimizer, noise_multiplier=self.noise_multiplier,
                                     max_grad_norm=min(cfg.max_grad_norm, 1e30),  # inf: noise std would be NaN
                                     expected_batch_size=self.batch_size,
                                     generator=self.generator)
        self.accountant = create_accountant(cfg.accountant)
        if self.spent_epochs:
            self.accountant.history = [(self.noise_multiplier, self.sample_rate,
                                        self.spent_epochs * int(trainer.steps_per_epoch))]
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        log.info("DP-SGD: q=%.4g (batch %d of %d), noise z=%.4g, clip C=%g, delta=%g, %s steps planned, %s accountant",
                 self.sample_rate, self.batch_size, self.n, self.noise_multiplier, cfg.max_grad_norm, cfg.delta,
                 planned, cfg.accountant)

    @property
    def steps(self) -> int:
        return sum(h[2] for h in self.accountant.history) if self.accountant else 0

    def exhausted(self) -> bool:
        """True once the planned steps of a target ε are spent (the site must stop)."""
        spent = bool(self.max_steps) and self.steps >= self.max_steps
        if spent and not self._warned:
            log.warning("DP budget spent: epsilon %.3g at delta %g after %d steps; this site stops training",
                        self.epsilon(), self.config.delta, self.steps)
            self._warned = True
        return spent

    def draw(self) -> list[int]:
        """One Poisson batch: each unit independently with probability ``q`` (may be empty)."""
        import torch

        mask = torch.rand(self.n, generator=self.generator, device=self.generator.device) < self.sample_rate
        return mask.nonzero().flatten().tolist()

    def empty_step(self, trainer: Any) -> None:
        """A step on an empty batch: zero per-sample gradients, so the update is noise only (still accounted)."""
        for p in self.optimizer.params:
            p.grad_sample = p.new_zeros((0, *p.shape))
        self.optimizer.step()

    def epsilon(self) -> float:
        if not self.steps:
            return 0.0
        if self.noise_multiplier <= 0:
            return math.inf
        return float(self.accountant.get_epsilon(delta=self.config.delta))

    def metrics(self) -> dict[str, float]:
        """ε so far, δ, z, C, q, steps, budget spent (0/1): the ``dp_*`` metrics."""
        return {"dp_epsilon": self.epsilon(), "dp_delta": self.config.delta, "dp_noise_multiplier": self.noise_multiplier,
                "dp_max_grad_norm": self.config.max_grad_norm, "dp_sample_rate": self.sample_rate,
                "dp_steps": float(self.steps), "dp_budget_spent": float(self.exhausted())}

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.accountant.history], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the accountant and generator; the noise stays the one already used, and a
        target ε caps the steps at the most that keep ε within it (a resume may add epochs)."""
        history = [(float(z), float(q), int(s)) for z, q, s in state["history"]]
        self.accountant.history = history
        self.generator.set_state(state["generator"])
        if history:
            self.noise_multiplier = self.optimizer.noise_multiplier = history[-1][0]
            if self.config.epsilon is not None:
                self.max_steps = _max_steps(self.config, self.noise_multiplier, self.sample_rate,
                                            lo=sum(h[2] for h in history))


def _max_steps(cfg: DPConfig, z: float, q: float, *, lo: int) -> int:
    """The most steps at ``(q, z)`` whose ε stays within ``cfg.epsilon`` (at least ``lo``)."""
    def ok(steps: int) -> bool:
        return epsilon_of(noise_multiplier=z, sample_rate=q, steps=steps, delta=cfg.delta,
                          accountant=cfg.accountant) <= cfg.epsilon

    if not ok(lo):
        return lo
    hi = max(1, lo) * 2
    while ok(hi) and hi < 10**8:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo

