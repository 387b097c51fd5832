"""The settings of one training: a model block ``tasks.<task>.models.<model>`` of the
configuration (config/schema.yaml, ``$defs/trainer``), typed and frozen, built once.

The training loop reads its settings as attributes (``settings.batch_size``), never as
strings indexing a dict; the objective's own keyword arguments stay a mapping, since each
objective takes others (``equihash.train`` objectives, ``keyword_defaults``).
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Mapping

from equihash.io import InputError
from equihash.nn.precision import check_precision


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """One model's training: budget, optimiser, evaluation and checkpoints (docs/method.md section 6)."""

    seed: int
    steps: int
    batch_size: int  # rows per batch: pairs, or instances for JMLH
    batches_per_step: int
    learning_rate: float
    clip_value: float
    recompute_forward: bool  # the thesis' second forward pass instead of keeping the first one's graphs
    device: str  # auto | cpu | cuda
    precision: str  # fp32 | bf16: the arithmetic of the network's passes (equihash.nn.precision)
    deterministic: bool
    eval_every: int
    eval_size: int
    checkpoint_every: int
    objective: Mapping[str, Any]  # the objective's keyword arguments (read-only)

    @classmethod
    def from_block(cls, block: Mapping, where: str = "model block") -> "TrainingSettings":
        """The settings of a model block; InputError naming ``where`` and the keys when one
        is missing or unknown (a perceptual hash's block is not a training's). ``pretrained``
        is the workflow's (a block that names a model is not trained); null, it trains."""
        if block.get("pretrained") is not None:
            raise InputError(f"{where}: pretrained: {block['pretrained']} names the model to use; such a block "
                             "is not trained (remove pretrained: to train it)")
        block = {key: value for key, value in block.items() if key != "pretrained"}
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if name not in block]
        unknown = sorted(set(block) - set(names))
        if missing or unknown:
            problems = ([f"lacks {', '.join(missing)}"] if missing else []) + \
                       ([f"has unknown keys {', '.join(unknown)}"] if unknown else [])
            raise InputError(f"{where} {' and '.join(problems)} (a model block holds exactly "
                             f"{', '.join(names)}: config/schema.yaml)")
        values = {name: block[name] for name in names}
        for field in dataclasses.fields(cls):
            if field.type == "float":
                values[field.name] = float(values[field.name])
        values["objective"] = MappingProxyType(dict(values["objective"]))
        check_precision(values["precision"], where)
        return cls(**values)

    def replace(self, **changes) -> "TrainingSettings":
        """A copy with ``changes`` (for instance another number of ``steps``)."""
        return dataclasses.replace(self, **changes)

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.batches_per_step

    def as_dict(self) -> dict:
        """The model block again (plain types): what the model file records."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["objective"] = dict(self.objective)
        return values
