"""Shared machinery of the drop-in optimizers: torch's flags and the fused-kernel routing.

A drop-in stores its hyperparameters in the parameter groups under torch.optim's names, so
schedulers, ``state_dict`` files and code that reads ``optimizer.param_groups`` keep working.
Its step takes one of two paths per parameter group:

* **fused**: torch's fused kernel, through torch's public functional API
  (``torch.optim.adam.adam(..., fused=True, grad_scale=, found_inf=)`` and the SGD/Adagrad
  ones), once per device and dtype (Adam, AdamW, SGD, Adagrad). The functional API costs
  Python per call over the bare ``torch._fused_*_`` kernels (its own grouping and checks); on
  20M parameters in 200 tensors plain Adam still runs at 0.97x torch's own fused step
  (``benchmarks/optim_step.py``, idle 2-core VM, docs/benchmarks.md), with the clip factor passed as ``grad_scale = 1 / factor`` and the non-finite flag as
  ``found_inf``: clipping and the skip ride inside the optimizer's own pass over memory and
  nothing is read back to the host;
* **transform**: the algorithm's gradient transformation on ``torch._foreach_*`` ops.

The fused path is chosen automatically (``fused=None``) whenever torch has a kernel for the
parameters' device and dtype; ``fused=False`` or ``foreach=True`` force the transform path.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .base import check_range
from .optimizer import GroupBatch, Optimizer

__all__ = ["DropIn", "check_betas", "fused_groups"]


def _fused_devices() -> set[str]:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        return set(_get_fused_kernels_supported_devices())
    except ImportError:  # pragma: no cover - older torch
        return {"cpu", "cuda"}


_FUSED_DEVICES = _fused_devices()


class DropIn(Optimizer):
    """Base of ``SGD``, ``Adagrad``, ``RMSprop``, ``Adadelta``, ``Adam`` and ``AdamW``."""

    #: True for algorithms with a fused torch kernel (implement :meth:`_fused_kernel`).
    has_fused_kernel: bool = False

    flag_keys = ("foreach", "fused", "capturable", "differentiable", "decoupled_weight_decay")

    def __init__(self, params: Any, transform: Any, lr: float | Tensor, *, clip: Any,
                 skip_nonfinite: bool, **hyper: Any) -> None:
        self._fusable_cache: dict[int, tuple[tuple[Any, ...], bool]] = {}
        super().__init__(params, transform, lr, clip=clip, skip_nonfinite=skip_nonfinite,
                         **hyper)

    def check_group(self, group: dict[str, Any]) -> None:
        """torch's checks of the implementation flags, and gradwell's two refusals."""
        fused, foreach = group.get("fused"), group.get("foreach")
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        if group.get("differentiable"):
            raise ValueError("differentiable=True is not supported by gradwell optimizers; "
                             "use torch.optim for differentiating through an optimizer step")
        if group.get("capturable"):
            raise ValueError("capturable=True (CUDA-graph capture) is not supported by gradwell "
                             "optimizers; allowed: capturable=False. gradwell's fused paths "
                             "already read nothing back to the host during a step")
        if fused and not self.has_fused_kernel:
            raise RuntimeError(f"{type(self).__name__} has no fused implementation; "
                               "allowed: fused=None or fused=False")
        if fused:
            for p in group["params"]:
                if not _fusable_tensor(p):
                    raise RuntimeError(
                        "`fused=True` requires all the params to be floating point Tensors "
                        f"of supported devices: {sorted(_FUSED_DEVICES)} but "
                        f"{p.dtype} and {p.device.type}")

    def _fusable(self, b: GroupBatch) -> bool:
        g = b.group
        if not self.has_fused_kernel or g.get("fused") is False:
            return False
        if g.get("fused") is None and g.get("foreach"):
            return False
        # Device type and dtype decide; they do not change between steps, so cache per group.
        # Chosen automatically (fused=None) only where the kernel computes torch's default
        # path's numbers: float32/float64 (torch's CPU fused SGD in 2.13 leaves most of a
        # float16/bfloat16 tensor unchanged, and half-precision fused kernels compute in float).
        key = (len(b.params), id(b.params[0]), b.params[0].device, b.params[0].dtype,
               bool(g.get("fused")))
        cached = self._fusable_cache.get(id(g))
        if cached is None or cached[0] != key:
            test = _fusable_tensor if g.get("fused") else _auto_fusable_tensor
            cached = (key, all(test(p) for p in b.params))
            self._fusable_cache[id(g)] = cached
        return cached[1]

    def _fused_step(self, b: GroupBatch, factor: Tensor | None, found_inf: Tensor | None) -> bool:
        if not self._fusable(b):
            return False
        self._fused_kernel(b, factor, found_inf)
        return True

    def _fused_kernel(self, b: GroupBatch, factor: Tensor | None,
                      found_inf: Tensor | None) -> None:
        """Run the fused kernel on ``b``; see :func:`fused_groups` for ``factor``."""
        raise NotImplementedError


def _fusable_tensor(p: Tensor) -> bool:
    return p.is_floating_point() and p.device.type in _FUSED_DEVICES


def _auto_fusable_tensor(p: Tensor) -> bool:
    return p.dtype in (torch.float32, torch.float64) and p.device.type in _FUSED_DEVICES


def fused_groups(tensorlists: list[list[Tensor]], factor: Tensor | None,
                 found_inf: Tensor | None
                 ) -> list[tuple[list[list[Tensor]], Tensor | None, Tensor | None]]:
    """Split parallel tensor lists (params, grads, ...) by device and dtype.

    Returns, per group, the lists, the ``grad_scale`` for the kernel (``1 / factor`` in float32,
    as torch's kernels take it) and ``found_inf`` on that device. Float64 gradients are scaled
    in place instead, so that clipping keeps double precision.
    """
    out = []
    for (device, dtype), lists in by_device_and_dtype(tensorlists).items():
        scale = None
        if factor is not None and dtype == torch.float64:
            torch._foreach_mul_(lists[1], factor.to(device))
        elif factor is not None:
            scale = torch.reciprocal(factor.to(device=device, dtype=torch.float32))
        fi = None if found_inf is None else found_inf.to(device, non_blocking=True)
        out.append((lists, scale, fi))
    return out


def by_device_and_dtype(tensorlists: list[list[Tensor]]
                        ) -> dict[tuple[torch.device, torch.dtype], list[list[Tensor]]]:
    """Parallel lists split by the first list's device and dtype (empty lists stay empty)."""
    index: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(tensorlists[0]):
        index.setdefault((p.device, p.dtype), []).append(i)
    return {key: [[lst[i] for i in idx] if lst else [] for lst in tensorlists]
            for key, idx in index.items()}


def scale_(grads: list[Tensor], factor: Tensor | None) -> None:
    """Multiply each gradient (dense or sparse) by ``factor`` in place, if there is one."""
    if factor is not None:
        for g in grads:
            g.mul_(factor.to(g.device))


def run_with_steps(steps: list[Tensor], found_inf: Tensor | None,
                   kernel: Callable[[], None]) -> None:
    """``steps += 1``, run the kernel, and undo the increment where the step was skipped."""
    torch._foreach_add_(steps, 1)
    kernel()
    if found_inf is not None:
        torch._foreach_sub_(steps, [found_inf] * len(steps))


def check_betas(betas: Any) -> None:
    """Each beta in [0, 1), as torch requires; both floats or both Tensors, as torch requires."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r}; allowed: a pair (beta1, beta2) in [0, 1)")
    if isinstance(betas[0], Tensor) != isinstance(betas[1], Tensor):
        raise ValueError(f"betas must be either both floats or both Tensors, got {betas!r}")
    for i, b in enumerate(betas):
        check_range(f"betas[{i}]", b, 0.0, 1.0, high_open=True,
                    label=f"beta parameter at index {i}",
                    allowed=f"betas[{i}] a number in [0.0, 1.0)")
