"""The training loop: checkpoints, exact resumption, the two-pass step, model files."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from equihash.data.mosaic import MnistMosaic
from equihash.io import InputError
from equihash.train.loop import Trainer, load_model
from equihash.train.settings import TrainingSettings

PARAMS = {
    "seed": 0, "steps": 4, "batch_size": 4, "batches_per_step": 2, "learning_rate": 1e-3,
    "clip_value": 10.0, "recompute_forward": False, "device": "cpu", "precision": "fp32", "deterministic": True,
    "eval_every": 2, "eval_size": 16, "checkpoint_every": 2,
    "objective": {"hamming_weight": 1.0, "shannon_weight": 0.01, "tuple_size": 3, "cover_size": None,
                  "shuffle_bits": False, "gradient": "normal", "prior": 1.0, "huber_slope": 0.0, "huber_knee": 9.0, "saturation": 9.0},
}
BANK = np.random.default_rng(0).integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
TRAIN, VALID = MnistMosaic(BANK, noise_sigma=0.2), MnistMosaic(BANK[:20], noise_sigma=0.2)
NOISE = {"noise_sigma": 0.2}


def trainer(checkpoint_dir, **changes):
    return Trainer(task="MnistMosaic", model="ShannonHamming", train_mosaic=TRAIN, valid_mosaic=VALID, nbits=16,
                   task_params=NOISE, params={**PARAMS, **changes}, checkpoint_dir=checkpoint_dir)


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_killed_training_resumes_bit_identical(tmp_path, precision):
    whole = trainer(tmp_path / "whole", precision=precision)
    whole.run()
    # killed after step 3: the last checkpoint is step 2, step 3 is redone on resumption
    killed = trainer(tmp_path / "killed", precision=precision)
    killed.run(stop_after=3)
    assert killed.step == 3
    resumed = trainer(tmp_path / "killed", precision=precision)
    assert resumed.try_resume() and resumed.step == 2
    resumed.run()
    assert resumed.step == 4
    assert_same_state(whole.net, resumed.net)
    assert resumed.eval_rows == whole.eval_rows
    for group_a, group_b in zip(whole.optimizer.state_dict()["state"].values(),
                                resumed.optimizer.state_dict()["state"].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in group_a)


def test_training_loop_equals_the_steps_one_by_one(tmp_path):
    """The loop makes each step's data in a background thread: the same parameters as plain steps."""
    looped = trainer(tmp_path / "loop", steps=3, eval_every=10, checkpoint_every=10)
    looped.run()
    plain = trainer(tmp_path / "plain", steps=3)
    for _ in range(3):
        plain.train_step()
    assert_same_state(looped.net, plain.net)


def test_precision_is_recorded_and_changes_the_arithmetic(tmp_path):
    fp32, bf16 = trainer(tmp_path / "fp32"), trainer(tmp_path / "bf16", precision="bf16")
    fp32.run(stop_after=1)
    bf16.run(stop_after=1)
    assert fp32.hash != bf16.hash  # a checkpoint of one precision never resumes the other
    first = {key: value for key, value in fp32.net.state_dict().items() if value.is_floating_point()}
    assert any(not torch.equal(value, bf16.net.state_dict()[key]) for key, value in first.items())
    fp32.save(tmp_path / "model.pt", tmp_path / "log.parquet")
    bf16.save(tmp_path / "model-bf16.pt", tmp_path / "log-bf16.parquet")
    assert load_model(tmp_path / "model.pt")[1]["precision"] == "fp32"
    assert load_model(tmp_path / "model-bf16.pt")[1]["precision"] == "bf16"
    with pytest.raises(InputError, match="the block: precision 'fp16'; expected one of fp32, bf16"):
        TrainingSettings.from_block({**PARAMS, "precision": "fp16"}, "the block")


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    trainer(tmp_path).run(stop_after=2)
    assert not trainer(tmp_path, learning_rate=2e-3).try_resume()
    assert trainer(tmp_path).try_resume()


def test_corrupted_checkpoint_is_named(tmp_path):
    t = trainer(tmp_path)
    t.checkpoint_path().parent.mkdir(parents=True, exist_ok=True)
    t.checkpoint_path().write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="last.pt: corrupted checkpoint"):
        t.try_resume()


def test_recomputed_forward_gives_the_same_parameter_update(tmp_path):
    kept, recomputed = trainer(tmp_path / "a"), trainer(tmp_path / "b", recompute_forward=True)
    kept.train_step()
    recomputed.train_step()
    for (name, a), b in zip(kept.net.named_parameters(), recomputed.net.parameters()):
        assert torch.equal(a, b), name


def test_step_statistics_and_training_data_are_keyed(tmp_path):
    t = trainer(tmp_path)
    assert torch.equal(t.step_data(3)[0], trainer(tmp_path).step_data(3)[0])
    assert not torch.equal(t.step_data(3)[0], t.step_data(4)[0])
    stats = t.train_step()
    assert set(stats) >= {"loss_hamming", "entropy", "saturation", "clipped_share",
                          "grad_norm_hamming", "grad_norm_shannon", "grad_norm_huber"}
    assert 0 <= stats["clipped_share"] <= 1 and 0 <= stats["saturation"] <= 1
    # C(16, 3) = 560 triples of at most 3 bits of entropy each
    assert 0 < stats["entropy"] <= 560 * 3


def test_saved_model_and_eval_log(tmp_path):
    t = trainer(tmp_path / "ckpt")
    t.run()
    t.save(tmp_path / "model.pt", tmp_path / "eval_log.parquet")
    net, config = load_model(tmp_path / "model.pt")
    assert config["nbits"] == 16 and config["learning_rate"] == 1e-3 and not net.training
    assert_same_state(net, t.net)
    log = pq.read_table(tmp_path / "eval_log.parquet").to_pandas()
    assert list(log.columns[:4]) == ["step", "split", "recall_r0", "recall_r1"]
    assert list(log["step"]) == [2, 2, 4, 4] and list(log["split"]) == ["train", "valid"] * 2
    assert {"worst_entropy_4", "unique_codes", "loss_hamming", "clipped_share"} <= set(log.columns)
    assert ((log["recall_r0"] <= log["recall_r1"]) & (log["recall_r1"] <= log["recall_r2"])).all()


def test_unknown_model_and_bad_model_file(tmp_path):
    with pytest.raises(InputError, match="unknown model 'Nope'"):
        Trainer(task="MnistMosaic", model="Nope", train_mosaic=TRAIN, valid_mosaic=TRAIN, nbits=16,
                task_params=NOISE, params=PARAMS, checkpoint_dir=tmp_path)
    (tmp_path / "model.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="model.pt: not a valid equihash model file"):
        load_model(tmp_path / "model.pt")


OBJECTIVE_PARAMS = {
    "HashNet": {"alpha": 0.15, "beta_init": 1.0, "beta_gamma": 0.0005, "beta_power": 0.5, "beta_step_size": 200},
    "JMLH": {"num_classes": 50, "kl_weight": 0.1},
    "HashNetShannon": {"alpha": 0.05, "shannon_weight": 0.0001, "tuple_size": 3, "cover_size": None,
                       "shuffle_bits": False, "gradient": "normal", "prior": 1.0, "beta_init": 1.0, "beta_gamma": 0.0005,
                       "beta_power": 0.5, "beta_step_size": 200},
}


def baseline(model, checkpoint_dir):
    return Trainer(task="MnistMosaic", model=model, train_mosaic=TRAIN, valid_mosaic=VALID, nbits=16,
                   task_params=NOISE, params={**PARAMS, "objective": OBJECTIVE_PARAMS[model]},
                   checkpoint_dir=checkpoint_dir)


def test_each_objective_gets_its_kind_of_data(tmp_path):
    x, targets = baseline("HashNet", tmp_path).step_data(0)
    assert x.shape == (8, 2, 56, 56) and targets["similar"].tolist() == [1.0] * 2 + [0.0] * 2 + [1.0] * 2 + [0.0] * 2
    x, targets = baseline("JMLH", tmp_path).step_data(0)
    assert x.shape == (8, 56, 56) and 0 <= int(targets["classes"].min()) and int(targets["classes"].max()) < 50
    x, targets = baseline("HashNetShannon", tmp_path).step_data(0)
    assert x.shape == (8, 2, 56, 56) and targets == {}
    jmlh = baseline("JMLH", tmp_path)
    # a class is one fixed training label: the same class gives the same clean mosaic
    assert len({tuple(row) for row in jmlh.classes.tolist()}) == 50


def labels_of_step(trainer, step):
    """The two labels of every row of a step, recorded from the trainer's own draws."""
    seen = []
    original = trainer.train_mosaic.noisy

    def record(labels, rng, idx, sub=0):
        seen.append(np.array(labels))
        return original(labels, rng, idx, sub=sub)

    trainer.train_mosaic.noisy = record
    try:
        trainer.step_data(step)
    finally:
        del trainer.train_mosaic.noisy
    return seen


@pytest.mark.parametrize("batch_size, batches", [(4, 2), (6, 3), (5, 2)])
def test_every_mixed_pair_batch_is_half_positive(tmp_path, batch_size, batches):
    hashnet = Trainer(task="MnistMosaic", model="HashNet", train_mosaic=TRAIN, valid_mosaic=VALID, nbits=16,
                      task_params=NOISE, checkpoint_dir=tmp_path,
                      params={**PARAMS, "batch_size": batch_size, "batches_per_step": batches,
                              "objective": OBJECTIVE_PARAMS["HashNet"]})
    for step in (0, 7):
        first, second = labels_of_step(hashnet, step)
        similar = hashnet.step_data(step)[1]["similar"].numpy()
        same = (first == second).all(axis=1)
        assert np.array_equal(same, similar == 1)  # positive rows: one label; negative: two
        for batch in similar.reshape(batches, batch_size):  # the rows of each batch of the step
            assert batch.sum() == (batch_size + 1) // 2


def test_jmlh_classes_are_distinct_labels(tmp_path):
    # 5 training images, 4 cells: 5 * 4 * 3 * 2 = 120 labels of distinct ids; 120 classes
    # take every one of them once (uniform draws alone would repeat some).
    small = MnistMosaic(BANK[:5], noise_sigma=0.2)
    params = {**PARAMS, "objective": {"num_classes": 120, "kl_weight": 0.1}}
    jmlh = Trainer(task="MnistMosaic", model="JMLH", train_mosaic=small, valid_mosaic=VALID, nbits=16,
                   task_params=NOISE, params=params, checkpoint_dir=tmp_path)
    assert len({tuple(row) for row in jmlh.classes.tolist()}) == 120
    assert all(len(set(row)) == 4 for row in jmlh.classes.tolist())
    with pytest.raises(InputError, match="num_classes: 121 classes asked, a train split of 5 images has only 120"):
        Trainer(task="MnistMosaic", model="JMLH", train_mosaic=small, valid_mosaic=VALID, nbits=16,
                task_params=NOISE, params={**params, "objective": {"num_classes": 121, "kl_weight": 0.1}},
                checkpoint_dir=tmp_path)


@pytest.mark.parametrize("model", ["HashNet", "JMLH", "HashNetShannon"])
def test_baselines_resume_bit_identical(tmp_path, model):
    whole = baseline(model, tmp_path / "whole")
    whole.run()
    baseline(model, tmp_path / "killed").run(stop_after=3)
    resumed = baseline(model, tmp_path / "killed")
    resumed.run()
    assert_same_state(whole.net, resumed.net)
    assert_same_state(whole.objective, resumed.objective)
    assert resumed.eval_rows == whole.eval_rows


def test_cuda_without_a_gpu_is_named(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="device: the configuration asks for cuda"):
        trainer(tmp_path, device="cuda")


def test_thesis_models_pseudosh_and_shquad_train_the_shannon_hamming_objective(tmp_path):
    from equihash.train.shannon_hamming import ShannonHamming

    shquad = {**PARAMS["objective"], "shannon_weight": 0.01, "tuple_size": 4, "cover_size": 3, "shuffle_bits": True}
    pseudo = {**PARAMS["objective"], "gradient": "pseudo-smooth"}
    for model, objective in (("SHQuad", shquad), ("PseudoSH", pseudo)):
        run = Trainer(task="MnistMosaic", model=model, train_mosaic=TRAIN, valid_mosaic=VALID, nbits=16,
                      task_params=NOISE, params={**PARAMS, "objective": objective}, checkpoint_dir=tmp_path / model)
        assert type(run.objective) is ShannonHamming and run.resolved["model"] == model
        run.run(stop_after=1)
        assert run.step == 1
    assert run.objective.gradient == "pseudo-smooth"


def test_checkpoint_of_other_images_is_not_resumed(tmp_path):
    trainer(tmp_path).run(stop_after=2)
    other = BANK.copy()
    other[7, 3, 3] ^= 1  # one pixel of one training image
    moved = Trainer(task="MnistMosaic", model="ShannonHamming", train_mosaic=MnistMosaic(other, noise_sigma=0.2),
                    valid_mosaic=VALID, nbits=16, task_params=NOISE, params=PARAMS, checkpoint_dir=tmp_path)
    assert not moved.try_resume()
    other_valid = Trainer(task="MnistMosaic", model="ShannonHamming", train_mosaic=TRAIN,
                          valid_mosaic=MnistMosaic(BANK[20:], noise_sigma=0.2), nbits=16, task_params=NOISE,
                          params=PARAMS, checkpoint_dir=tmp_path)
    assert not other_valid.try_resume()
    assert trainer(tmp_path).try_resume()


def test_a_diverging_step_stops_naming_it_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = trainer(tmp_path)
    run.run(stop_after=2)  # checkpoint at step 2
    saved = run.checkpoint_path().read_bytes()
    resumed = trainer(tmp_path)
    original = resumed.objective.logits_gradient

    def diverging(z, **kwargs):
        grad, stats = original(z, **kwargs)
        return grad, {**stats, "loss": float("nan")} if kwargs["step"] == 2 else stats

    monkeypatch.setattr(resumed.objective, "logits_gradient", diverging)
    assert resumed.try_resume()
    before = {k: v.clone() for k, v in resumed.net.state_dict().items()}
    with pytest.raises(InputError, match=r"training diverged at step 3: NaN or infinite loss or gradient.*last good "
                                         r"checkpoint .*last\.pt"):
        resumed.run()
    assert run.checkpoint_path().read_bytes() == saved
    resumed_state = resumed.net.state_dict()
    # nothing of the diverging step was applied (the weights are those of step 2)
    assert resumed.step == 2 and all(torch.equal(before[k], resumed_state[k]) for k in before if "running" not in k
                                     and "num_batches" not in k)
    with pytest.raises(InputError, match="step 1: NaN or infinite logits"):
        bad = trainer(tmp_path / "fresh")
        with torch.no_grad():
            next(bad.net.parameters()).fill_(float("inf"))
        bad.run()
