"""fedimg: GPU-accelerated federated learning for medical imaging.

Sites deface their MRI, train locally, and send only model updates to an NVFlare server
that aggregates them with fedimg's kernels.

>>> import fedimg
>>> fedimg.__version__
'0.1.0'
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
