"""What protects patients in what leaves a site: DP-SGD (:mod:`fedimg.privacy.dpsgd`).

>>> from fedimg.privacy import DPConfig
>>> DPConfig(noise_multiplier=1.0).delta
1e-05
"""

from fedimg.privacy.dpsgd import DPConfig, PatientDP, dp_metric_names, epsilon_of

__all__ = ["DPConfig", "PatientDP", "dp_metric_names", "epsilon_of"]
