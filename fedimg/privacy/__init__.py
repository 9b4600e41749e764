"""What protects patients in what leaves a site: patient-level DP-SGD (:mod:`fedimg.privacy.dpsgd`)
and client-level DP-FedAvg's site and accounting halves (:mod:`fedimg.privacy.clientdp`).

>>> from fedimg.privacy import DPConfig
>>> DPConfig(noise_multiplier=1.0).delta
1e-05
"""

from fedimg.privacy.clientdp import ClientDPConfig, client_dp_epsilon, clip_update, statement
from fedimg.privacy.dpsgd import DPConfig, PatientDP, dp_metric_names, epsilon_of

__all__ = ["DPConfig", "PatientDP", "dp_metric_names", "epsilon_of", "ClientDPConfig", "clip_update",
           "client_dp_epsilon", "statement"]
