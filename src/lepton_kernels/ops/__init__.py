"""Public functional API: validation, backend choice, results in the caller's array type.

Each op lives in the module of its family (``elementwise``, ``activation``, ``pool``, ``conv``,
``linear``, ``loss``, ``norm``, ``optim``, ``quant``) and is declared once in
``lepton_kernels._registry``; this package binds every registered name and
lists them in ``__all__``, in the registry's order.
"""
from .. import _registry


def _bind_registered_ops() -> list[str]:
    names = _registry.public_names()
    for spec in _registry.OPS:
        globals()[spec.name] = spec.function  # imports ops.<family module> once
    return names


__all__ = _bind_registered_ops()
