"""Adaptation methods, one module each, looked up by name (config.method.name)."""
from jaxdapt.methods import dann, discrepancy, supervised  # noqa: F401  (register)
from jaxdapt.methods import afn, cdan, entropy, jan, mcc, mcd, mdd  # noqa: F401  (register)
from jaxdapt.methods.base import METHODS, Method, Outputs, get_method

__all__ = ["METHODS", "Method", "Outputs", "get_method"]
