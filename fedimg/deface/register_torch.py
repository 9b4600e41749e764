"""The torch side of :mod:`.register`: one pyramid level sampled with ``grid_sample`` (autograd gradients).

Used for a GPU device, for ``backend="torch"`` and for the head-mask / gradient-field terms;
the CPU default is :mod:`.register_np`.

>>> import numpy as np, torch
>>> lvl = TorchLevel(torch.rand(6, 6, 6), np.eye(4), torch.rand(6, 6, 6), np.eye(4), np.zeros(3), torch.device("cpu"), 16)
>>> tuple(lvl.loss(torch.eye(3)[None], torch.zeros(1, 3), torch.zeros(3), torch.arange(50)).shape)
(1,)
"""

from __future__ import annotations

import numpy as np

from .mi import gradient_fields as _ngf
from .mi import mutual_information as _mi
from .mi import world_gradient as _grad

__all__ = ["TorchLevel", "level_masks"]


class TorchLevel:
    """One pyramid level: subject sample points and the template as a grid_sample input."""

    def __init__(self, subj, s_aff, tmpl, t_aff, c_s, device, bins, masks=None, weight: float = 0.0, ngf: float = 0.0):
        import torch

        self.device = device
        self.weight = weight if masks is not None else 0.0
        self.ngf = ngf
        chans = [tmpl] + ([masks[1]] if self.weight else []) + (list(_grad(tmpl, t_aff)) if ngf else [])
        self.tmpl = torch.stack(chans)[None]
        self.mask_values = masks[0].reshape(-1) if self.weight else None
        sh = subj.shape
        idx = torch.stack(torch.meshgrid(*[torch.arange(n, device=device, dtype=torch.float32) for n in sh], indexing="ij"), -1).reshape(-1, 3)
        a = torch.as_tensor(s_aff, dtype=torch.float32, device=device)
        self.points = idx @ a[:3, :3].T + a[:3, 3] - torch.as_tensor(c_s, dtype=torch.float32, device=device)
        self.values = subj.reshape(-1)
        if ngf:  # subject gradients (N, 3) and each image's edge scale: the mean gradient size over the head
            self.grad = _grad(subj, s_aff).reshape(3, -1).T.contiguous()
            self.eps = [float(g.norm(dim=0)[v > 0.05].mean()) for g, v in ((self.tmpl[0, -3:], tmpl), (self.grad.T, self.values))]
        self.bins = bins
        tinv = torch.as_tensor(np.linalg.inv(t_aff), dtype=torch.float32, device=device)
        size = torch.as_tensor(tmpl.shape, dtype=torch.float32, device=device)
        # world -> normalised grid coords, with grid_sample's (z, y, x) <- (i, j, k) order
        self.to_grid = (tinv[:3, :3] * (2.0 / (size - 1))[:, None]).flip(0)
        self.to_grid_shift = (tinv[:3, 3] * 2.0 / (size - 1) - 1.0).flip(0)
        self.fg = self.values > 0.05

    def restrict(self, keep: np.ndarray) -> None:
        """Sample only the voxels where the flat boolean ``keep`` holds (the acquired field of view)."""
        import torch

        k = torch.as_tensor(keep, device=self.device)
        self.points, self.values, self.fg = self.points[k], self.values[k], self.fg[k]
        if self.mask_values is not None:
            self.mask_values = self.mask_values[k]
        if self.ngf:
            self.grad = self.grad[k]

    def loss(self, lin, trans, c_t, sel, shape: bool = True):
        """-(intensity MI + weights x (head-mask MI, gradient fields)) per start; ``shape=False``: intensity MI only."""
        import torch
        import torch.nn.functional as F

        pts = self.points[sel]  # (N, 3)
        world = pts @ lin.transpose(1, 2) + (trans + c_t)[:, None, :]  # (B, N, 3)
        grid = world @ self.to_grid.T + self.to_grid_shift
        moving = F.grid_sample(self.tmpl, grid[None, :, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=True)
        mi = _mi(moving[0, 0, :, :, 0], self.values[sel], self.bins)
        if self.weight and shape:
            mi = mi + self.weight * _mi(moving[0, 1, :, :, 0], self.mask_values[sel], self.bins)
        if self.ngf and shape:  # template gradient at the mapped point, pulled back to subject world: lin^T g
            g = torch.einsum("bji,bnj->bni", lin, moving[0, -3:, :, :, 0].permute(1, 2, 0))
            mi = mi + self.ngf * _ngf(g, self.grad[sel], *self.eps)
        return -mi


def level_masks(s, sa, t, ta):
    """Head masks (float tensors) of one level's subject and template, on their own grids."""
    import torch

    from .coarse import head_mask

    sm = head_mask(s.cpu().numpy(), sa, step_mm=1e-3)[0]
    tm = head_mask(t.cpu().numpy(), ta, step_mm=1e-3)[0]
    return (torch.as_tensor(sm, dtype=torch.float32, device=s.device), torch.as_tensor(tm, dtype=torch.float32, device=t.device))
