"""Per-frame loss functions of the autoencoder family, as pure functions of tensors.

Every function returns one value per frame, shape ``(n,)``; the models add
them up as named terms and :meth:`mdcvkit.models.BaseAutoencoder.loss`
reduces each with the one weighted mean, Σwᵢvᵢ / Σwᵢ.
"""

import math

import torch

__all__ = ["gaussian_nll", "gaussian_kl", "standard_normal_kl", "rbf_kernel", "mmd_per_frame"]

LOG_2PI = math.log(2 * math.pi)


def gaussian_nll(x, mean, log_var):
    """Negative log-likelihood of ``x`` under a diagonal Gaussian, summed over the last axis.

    -log N(x; μ, diag σ²) = ½ Σⱼ [(xⱼ − μⱼ)² / σⱼ² + log σⱼ² + log 2π]

    Parameters
    ----------
    x, mean : torch.Tensor, shape (n, d)
    log_var : torch.Tensor, shape (n, d) or (d,)
        Natural logarithm of the variance σ².

    Returns
    -------
    torch.Tensor, shape (n,)
    """
    return 0.5 * (((x - mean) ** 2) * torch.exp(-log_var) + log_var + LOG_2PI).sum(dim=-1)


def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    """KL(N(μq, σq²) ‖ N(μp, σp²)) of diagonal Gaussians, summed over the last axis.

    KL = ½ Σⱼ [log σpⱼ² − log σqⱼ² + (σqⱼ² + (μqⱼ − μpⱼ)²) / σpⱼ² − 1]

    Returns
    -------
    torch.Tensor, shape mean_q.shape[:-1]
    """
    return 0.5 * (log_var_p - log_var_q + (torch.exp(log_var_q) + (mean_q - mean_p) ** 2)
                  * torch.exp(-log_var_p) - 1).sum(dim=-1)


def standard_normal_kl(mean, log_var):
    """KL(N(μ, σ²) ‖ N(0, 1)) = ½ Σⱼ (μⱼ² + σⱼ² − 1 − log σⱼ²), summed over the last axis."""
    return 0.5 * (mean ** 2 + torch.exp(log_var) - 1 - log_var).sum(dim=-1)


def rbf_kernel(a, b, bandwidth):
    """Gaussian (RBF) kernel matrix k(aᵢ, bⱼ) = exp(−‖aᵢ − bⱼ‖² / (2 h²)), shape (len(a), len(b))."""
    return torch.exp(-torch.cdist(a, b) ** 2 / (2 * bandwidth ** 2))


def mmd_per_frame(z, prior, bandwidth, block=1024):
    """Per-frame contributions to the unbiased MMD² between encoded ``z`` and ``prior`` samples.

    For frames i = 1..n of a block (n ≥ 2) the contribution is

    mᵢ = Σ_{j≠i} k(zᵢ, zⱼ) / (n − 1) + Σ_{j≠i} k(pᵢ, pⱼ) / (n − 1) − 2 Σⱼ k(zᵢ, pⱼ) / n,

    so that the mean over the block is the unbiased U-statistic estimate of
    MMD² with the RBF kernel (Gretton et al., JMLR 13, 723 (2012);
    Tolstikhin et al., ICLR 2018, Algorithm 2). Large inputs are cut into
    consecutive blocks of at most ``block`` frames, which bounds memory at
    O(block²); the mean over all frames stays an unbiased estimate.

    Parameters
    ----------
    z, prior : torch.Tensor, shape (n, d)
        Encoded frames and as many samples of the prior.
    bandwidth : float
        Kernel bandwidth h (latent units).
    block : int, default 1024

    Returns
    -------
    torch.Tensor, shape (n,)
        Zeros for a block of a single frame (no pair to compare).
    """
    parts = []
    for start in range(0, len(z), block):
        zb, pb = z[start:start + block], prior[start:start + block]
        n = len(zb)
        if n < 2:
            parts.append(torch.zeros(n, dtype=z.dtype, device=z.device))
            continue
        off_diagonal = 1 - torch.eye(n, dtype=z.dtype, device=z.device)
        k_zz = (rbf_kernel(zb, zb, bandwidth) * off_diagonal).sum(dim=1) / (n - 1)
        k_pp = (rbf_kernel(pb, pb, bandwidth) * off_diagonal).sum(dim=1) / (n - 1)
        k_zp = rbf_kernel(zb, pb, bandwidth).sum(dim=1) / n
        parts.append(k_zz + k_pp - 2 * k_zp)
    return torch.cat(parts) if parts else z.new_zeros(0)
