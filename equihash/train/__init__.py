"""Training objectives (one module each), the training loop and evaluation during training."""

import inspect


def keyword_defaults(function) -> dict:
    """The parameters of ``function`` that have a default, with that default: an objective's
    ``DEFAULTS`` (the config's ``objective`` block) is its constructor's keyword defaults."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}
