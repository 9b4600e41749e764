"""What protects patients in what leaves a site: patient-level DP-SGD (:mod:`fedimg.privacy.dpsgd`)
client-level DP-FedAvg's site and accounting halves (:mod:`fedimg.privacy.clientdp`) and a site's
screen of its own update before encryption (:mod:`fedimg.privacy.selfcheck`).

>>> from fedimg.privacy import DPConfig
>>> DPConfig(noise_multiplier=1.0).delta
1e-05
"""

from fedimg.privacy.clientdp import ClientDPConfig, client_dp_epsilon, client_noise_for, clip_update, statement
from fedimg.privacy.dpsgd import DPConfig, PatientDP, dp_metric_names, epsilon_of
from fedimg.privacy.selfcheck import SERVER_CHECKS_OFF_UNDER_HE, UpdateCheckError, check_own_update

__all__ = ["DPConfig", "PatientDP", "dp_metric_names", "epsilon_of", "ClientDPConfig", "clip_update",
           "client_dp_epsilon", "client_noise_for", "statement", "check_own_update", "UpdateCheckError",
           "SERVER_CHECKS_OFF_UNDER_HE"]
