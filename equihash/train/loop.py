"""The training loop (docs/method.md section 6): endless fresh keyed instances, the two-pass step of 6.1,
evaluation every ``eval_every`` steps (6.6), periodic checkpoints and exact resumption.

Every random draw is keyed: the labels of step ``s`` come from the stream
``(seed, "train", "train_labels")`` at index ``s``; view ``v`` of pair ``p`` of step ``s``
is noisy instance ``s * pairs_per_step + p``, sub-item ``v`` of ``(seed, "train",
"train_noise")``. A run resumed from a checkpoint therefore sees the same data as an
uninterrupted one and ends bit-identical to it (on the same machine and thread count).

The step: all batches of the step are forwarded with gradient tracking; the gradient
with respect to all their logits is computed at once by the objective (so the entropy
is estimated over every instance of the step); each batch then back-propagates its
slice. The thesis recomputes the forward pass after a first pass without gradient to
save memory; ``recompute_forward: true`` does exactly that (the gradient is the same,
BatchNorm running statistics are then updated twice per step as in the thesis code),
the default keeps the graphs of the first pass, which saves a third of the work.

Objectives (one module each) say which data they train on (``objective.data``):
``positive_pairs`` (two instances of one label per row), ``mixed_pairs`` (in every batch,
the first half of the rows positive pairs and the second half pairs of distinct labels,
with ``similar`` 1/0) or ``classes`` (one instance of one of ``num_classes`` fixed,
pairwise distinct training labels per row); each returns the gradient of its loss with
respect to the logits of the step.

A model is named as in the thesis; :data:`MODEL_OBJECTIVES` gives each name its objective
(``equihash.models.MODEL_OBJECTIVE``).

Device: ``device: auto`` trains on CUDA when it is present, else on the CPU; ``precision``
(fp32 | bf16, equihash.nn.precision) is the arithmetic of the network's passes, in training
and in its evaluations; ``deterministic`` asks torch for deterministic kernels. Instances
are always generated on the CPU with keyed noise.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from equihash.codes import pack_codes
from equihash.config import config_sha256
from equihash.data.keyed import KeyedRandom
from equihash.data.mosaic import distinct_labels
from equihash.io import InputError, atomic_path, write_table
from equihash.models import HASH_BITS, MODEL_OBJECTIVE
from equihash.nn.cpu import keep_freed_memory
from equihash.nn.perceptual import PerceptualHash
from equihash.nn.precision import precision_context
from equihash.progress import Progress, logger
from equihash.tasks import array_identity, build_network, open_mosaics
from equihash.train.evaluation import eval_log_table, subset_family, training_figures
from equihash.train.hashnet import HashNet
from equihash.train.hashnet_shannon import HashNetShannon
from equihash.train.jmlh import JMLH
from equihash.train.settings import TrainingSettings
from equihash.train.shannon_hamming import ShannonHamming

CHECKPOINT_FORMAT = 1
OBJECTIVES = {"ShannonHamming": ShannonHamming, "HashNet": HashNet, "JMLH": JMLH, "HashNetShannon": HashNetShannon}
#: The thesis' models and the objective each trains with (its settings: the model block).
MODEL_OBJECTIVES = {model: OBJECTIVES[objective] for model, objective in MODEL_OBJECTIVE.items()}


def resolve_device(requested: str, *, deterministic: bool = False) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error naming the key."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("device: the configuration asks for cuda but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                         "set device: auto or cpu, or run the job on a GPU node")
    if deterministic:
        if requested == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    return torch.device(requested)


def class_labels(generator: np.random.Generator, n: int, bank_size: int, cells: int) -> np.ndarray:
    """``n`` pairwise distinct labels of ``cells`` distinct ids each: the JMLH classes.
    Repeated labels are redrawn until none is left (draws from ``generator`` only)."""
    possible = math.perm(bank_size, cells)
    if n > possible:
        raise InputError(f"objective.num_classes: {n} classes asked, a train split of {bank_size} images "
                         f"has only {possible} labels of {cells} distinct images")
    labels = distinct_labels(generator, n, bank_size, cells)
    while True:
        _, first = np.unique(labels, axis=0, return_index=True)
        repeated = np.setdiff1d(np.arange(n), first)
        if repeated.size == 0:
            return labels
        labels[repeated] = distinct_labels(generator, repeated.size, bank_size, cells)


class EvalSet:
    """The fixed, seeded triplets of docs/method.md section 6.6 for one split."""

    def __init__(self, mosaic, split: str, size: int, seed: int):
        gen = KeyedRandom(seed, split, "eval_labels").at(0)
        anchor = distinct_labels(gen, size, mosaic.bank_size, mosaic.cells)
        negative = distinct_labels(gen, size, mosaic.bank_size, mosaic.cells)
        same = np.flatnonzero((anchor == negative).all(axis=1))
        while same.size:
            negative[same] = distinct_labels(gen, same.size, mosaic.bank_size, mosaic.cells)
            same = same[(anchor[same] == negative[same]).all(axis=1)]
        idx = np.arange(size)
        self.split = split
        self.instances = torch.from_numpy(np.stack([
            mosaic.noisy(anchor, KeyedRandom(seed, split, "eval_anchor"), idx),
            mosaic.noisy(anchor, KeyedRandom(seed, split, "eval_positive"), idx),
            mosaic.noisy(negative, KeyedRandom(seed, split, "eval_negative"), idx),
        ], axis=1))  # (size, 3, H, W)


@torch.inference_mode()
def encode_instances(net: torch.nn.Module, instances: torch.Tensor, batch_size: int = 512,
                     device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """Float32 logits of ``instances`` (n, ..., H, W) in evaluation mode, batch by batch, on the
    CPU; the network runs on ``device`` at ``precision`` (equihash.nn.precision)."""
    was_training = net.training
    net.eval()
    with precision_context(precision, torch.device(device)):
        out = torch.cat([net(instances[i:i + batch_size].to(device)).float().cpu()
                         for i in range(0, len(instances), batch_size)])
    net.train(was_training)
    return out


class Trainer:
    """Trains one model of one task; ``run()`` resumes from the newest valid checkpoint."""

    def __init__(self, *, task: str, model: str, train_mosaic, valid_mosaic, nbits: int,
                 params: TrainingSettings | Mapping, checkpoint_dir, task_params: dict | None = None):
        """``params``: the model block (or its :class:`TrainingSettings`); ``task_params``: what
        the model file records of the task besides ``nbits`` (``noise_sigma`` for MnistMosaic,
        ``network`` options for OpenImagesMosaic)."""
        if model not in MODEL_OBJECTIVES:
            raise InputError(f"unknown model '{model}'; known models: {', '.join(sorted(MODEL_OBJECTIVES))}")
        settings = (params if isinstance(params, TrainingSettings)
                    else TrainingSettings.from_block(params, f"the model block of {task}/{model}"))
        self.task, self.model, self.nbits, self.settings = task, model, nbits, settings
        self.resolved = {"task": task, "model": model, "nbits": nbits, **(task_params or {}), **settings.as_dict()}
        self.train_mosaic, self.valid_mosaic = train_mosaic, valid_mosaic
        # A checkpoint resumes only the training it was written by: the same settings on the
        # same images (the train and valid splits) and, for OpenImagesMosaic, the same Perlin file.
        data = {"train": array_identity(train_mosaic.bank), "valid": array_identity(valid_mosaic.bank)}
        if getattr(train_mosaic, "perlin", None) is not None:
            data["perlin"] = [array_identity(field) for field in train_mosaic.perlin]
        self.hash = config_sha256({"settings": self.resolved, "data": data})
        self.seed = settings.seed
        self.rows_per_step = settings.rows_per_step
        self.labels_rng = KeyedRandom(self.seed, "train", "train_labels")
        self.noise_rng = KeyedRandom(self.seed, "train", "train_noise")
        self.objective_rng = KeyedRandom(self.seed, "train", "objective")
        self.device = resolve_device(settings.device, deterministic=settings.deterministic)
        self.autocast = precision_context(settings.precision, self.device)
        keep_freed_memory()
        torch.manual_seed(self.seed)
        self.net = build_network(task, nbits, **self.resolved.get("network", {}))
        self.net = self.net.to(self.device, memory_format=torch.channels_last)
        self.objective = MODEL_OBJECTIVES[model](nbits, **settings.objective).to(self.device)
        self.classes = None
        if self.objective.data == "classes":
            self.classes = class_labels(KeyedRandom(self.seed, "train", "classes").at(0),
                                        settings.objective["num_classes"], self.train_mosaic.bank_size,
                                        self.train_mosaic.cells)
        self.optimizer = torch.optim.Adam([*self.net.parameters(), *self.objective.parameters()],
                                          lr=settings.learning_rate)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.step = 0
        self.eval_rows: list[dict] = []
        self._interval: list[dict] = []
        self._eval_sets = None
        self.families = {s: subset_family(nbits, s, self.seed) for s in range(1, 5)}

    # ------------------------------------------------------------------ data
    def step_data(self, step: int) -> tuple[torch.Tensor, dict]:
        """The training instances of ``step`` and the objective's targets.

        Pairs: (rows, 2, H, W) with ``similar`` for mixed pairs; classes: (rows, H, W) with
        ``classes``. Row r of step s is noisy instance ``s * rows + r`` of the noise stream
        (sub-item = the member of the pair), so every step is reproducible on its own.
        Mixed pairs: in each batch of ``batch_size`` rows the first ``ceil(batch_size / 2)``
        are positive, the others negative, so that every batch (and its BatchNorm
        statistics) is half positive as in the thesis.
        """
        n, mosaic = self.rows_per_step, self.train_mosaic
        gen = self.labels_rng.at(step)
        idx = np.arange(step * n, (step + 1) * n)
        data = self.objective.data
        if data == "classes":
            classes = gen.integers(0, len(self.classes), size=n)
            x = mosaic.noisy(self.classes[classes], self.noise_rng, idx)
            return torch.from_numpy(x), {"classes": torch.from_numpy(classes)}
        first = distinct_labels(gen, n, mosaic.bank_size, mosaic.cells)
        second = first.copy()
        targets = {}
        if data == "mixed_pairs":
            size = self.settings.batch_size
            similar = np.arange(n) % size < (size + 1) // 2
            negative = np.flatnonzero(~similar)
            second[negative] = distinct_labels(gen, negative.size, mosaic.bank_size, mosaic.cells)
            same = negative[(second[negative] == first[negative]).all(axis=1)]
            while same.size:
                second[same] = distinct_labels(gen, same.size, mosaic.bank_size, mosaic.cells)
                same = same[(second[same] == first[same]).all(axis=1)]
            targets["similar"] = torch.from_numpy(similar.astype(np.float32))
        views = [mosaic.noisy(labels, self.noise_rng, idx, sub=v) for v, labels in enumerate((first, second))]
        return torch.from_numpy(np.stack(views, axis=1)), targets

    # ------------------------------------------------------------------ one step
    def train_step(self, data: tuple[torch.Tensor, dict] | None = None) -> dict:
        """One step; ``data``: ``step_data(self.step)`` when already made (by :meth:`run`'s producer)."""
        instances, targets = data if data is not None else self.step_data(self.step)
        batches = instances.split(self.settings.batch_size)
        device, recompute = self.device, self.settings.recompute_forward
        self.net.train()

        def forward(batch):
            with self.autocast:
                return self.net(batch.to(device, non_blocking=True)).float()

        if recompute:
            with torch.no_grad():
                logits = torch.cat([forward(b) for b in batches])
        else:
            outputs = [forward(b) for b in batches]
            logits = torch.cat([o.detach() for o in outputs])
        self.optimizer.zero_grad(set_to_none=True)
        targets = {k: v.to(device) for k, v in targets.items()}
        grad, stats = self.objective.logits_gradient(
            logits, step=self.step, rng=self.objective_rng.at(self.step), **targets)
        if not (torch.isfinite(logits).all() and torch.isfinite(grad).all() and np.isfinite(stats["loss"])):
            kept = self.checkpoint_path()
            raise InputError(f"training diverged at step {self.step + 1}: NaN or infinite "
                             f"{'logits' if not torch.isfinite(logits).all() else 'loss or gradient'}; nothing of "
                             f"this step was applied and the last good checkpoint "
                             f"{kept if kept.exists() else '(none yet)'} is kept (lower learning_rate, or "
                             "look at the objective's settings)")
        for i, batch in enumerate(batches):
            out = forward(batch) if recompute else outputs[i]
            out.backward(grad[i * len(batch):(i + 1) * len(batch)])
        clip = self.settings.clip_value
        parameters = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        clipped = sum(int((p.grad.abs() > clip).sum()) for p in parameters)
        total = sum(p.grad.numel() for p in parameters)
        torch.nn.utils.clip_grad_value_(parameters, clip)
        self.optimizer.step()
        self.step += 1
        return {**stats, "clipped_share": clipped / total}

    # ------------------------------------------------------------------ evaluation (6.6)
    def evaluate(self) -> list[dict]:
        if self._eval_sets is None:
            size = self.settings.eval_size
            self._eval_sets = [EvalSet(self.train_mosaic, "train", size, self.seed),
                               EvalSet(self.valid_mosaic, "valid", size, self.seed)]
        means = {k: float(np.mean([r[k] for r in self._interval])) for k in self._interval[0]} if self._interval else {}
        rows = []
        for eval_set in self._eval_sets:
            codes = pack_codes(encode_instances(self.net, eval_set.instances, device=self.device,
                                                precision=self.settings.precision))
            figures = training_figures(codes[:, 0], codes[:, 1], codes[:, 2], self.families)
            rows.append({"step": self.step, "split": eval_set.split, **figures, **means})
        self._interval = []
        return rows

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    def save_checkpoint(self) -> None:
        state = {
            "format": CHECKPOINT_FORMAT, "config_hash": self.hash, "step": self.step,
            "net": self.net.state_dict(), "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "eval_rows": self.eval_rows, "interval": self._interval,
        }
        with atomic_path(self.checkpoint_path()) as tmp, open(tmp, "wb") as f:
            torch.save(state, f)  # a file object: the archive's inner name does not depend on tmp

    def try_resume(self) -> bool:
        """Load the checkpoint if it belongs to this configuration; a stale one is ignored."""
        path = self.checkpoint_path()
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:
            raise InputError(f"{path}: corrupted checkpoint ({exc}); delete it to restart training") from None
        if state.get("format") != CHECKPOINT_FORMAT or state.get("config_hash") != self.hash:
            logger.info("%s: checkpoint of another configuration, starting afresh", path)
            return False
        self.net.load_state_dict(state["net"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.eval_rows, self._interval = state["step"], state["eval_rows"], state["interval"]
        logger.info("resumed from %s at step %d", path, self.step)
        return True

    # ------------------------------------------------------------------ the run
    def run(self, *, stop_after: int | None = None) -> None:
        """Train to ``steps`` (or stop early after ``stop_after`` steps of this call, for tests)."""
        self.try_resume()
        p = self.settings
        start, begun = self.step, time.monotonic()
        # A background thread makes the next step's instances while this step trains (numpy's
        # generators release the GIL); every step's data is keyed by its step, so the result
        # is that of a plain loop.
        with Progress(p.steps, f"train {self.task}/{self.model}", "step", initial=self.step) as bar, \
                ThreadPoolExecutor(1, thread_name_prefix="instances") as producer:
            upcoming = producer.submit(self.step_data, self.step) if self.step < p.steps else None
            while self.step < p.steps:
                if stop_after is not None and self.step - start >= stop_after:
                    return
                data = upcoming.result()
                if self.step + 1 < p.steps:
                    upcoming = producer.submit(self.step_data, self.step + 1)
                stats = self.train_step(data)
                self._interval.append(stats)
                bar.update(1, loss=stats["loss"])
                if self.step % p.eval_every == 0 or self.step == p.steps:
                    rows = self.evaluate()
                    self.eval_rows.extend(rows)
                    valid = rows[-1]
                    logger.info("step %d: valid recall@0 %.4f precision@0 %.4f worst entropy(4) %.3f",
                                self.step, valid["recall_r0"], valid["precision_r0"], valid["worst_entropy_4"])
                if self.step % p.checkpoint_every == 0 or self.step == p.steps:
                    self.save_checkpoint()
        elapsed = time.monotonic() - begun
        if self.step > start:
            logger.info("%d steps in %.1f s (%.3f s per step)", self.step - start, elapsed,
                        elapsed / (self.step - start))

    def save(self, model_path, eval_log_path) -> None:
        save_model(self.net.cpu(), self.resolved, model_path)
        self.net.to(self.device)
        write_table(eval_log_table(self.eval_rows), eval_log_path)


def save_model(net: torch.nn.Module, config: dict, path) -> None:
    """Write ``model.pt``: the state dict and the resolved config it was trained with."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: identical models, identical bytes
        torch.save({"format": CHECKPOINT_FORMAT, "state_dict": net.state_dict(), "config": config}, f)


def load_model(path) -> tuple[torch.nn.Module, dict]:
    """The trained network of a ``model.pt`` (in evaluation mode) and its resolved config;
    for the model file of a perceptual hash (config key ``perceptual``), the hash."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = state["config"]
        if "perceptual" in config:
            return PerceptualHash(config["perceptual"]), config
        net = build_network(config["task"], config["nbits"], **config.get("network", {}))
        net.load_state_dict(state["state_dict"])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a valid equihash model file ({exc})") from None
    return net.eval(), config


def train_model(*, task: str, model: str, bank, nbits: int, params: TrainingSettings | Mapping, checkpoint_dir,
                model_path, eval_log_path, noise_sigma: float | None = None, perlin=None, network: dict | None = None,
                in_memory: bool = False) -> Trainer:
    """Train (or resume) one model on a task's bank and write model.pt and eval_log.parquet.

    ``bank``, ``noise_sigma``, ``perlin`` and ``in_memory`` as in
    ``equihash.tasks.open_mosaic``; ``network``: options of the task's network
    (OpenImagesMosaic: ``{"depth": 18}``), recorded in the model file.
    """
    mosaics = open_mosaics(task, bank, ("train", "valid"), noise_sigma=noise_sigma, perlin=perlin,
                           in_memory=in_memory)
    task_params = {"noise_sigma": noise_sigma} if noise_sigma is not None else {}
    if network:
        task_params["network"] = dict(network)
    trainer = Trainer(task=task, model=model, train_mosaic=mosaics[0], valid_mosaic=mosaics[1], nbits=nbits,
                      params=params, checkpoint_dir=checkpoint_dir, task_params=task_params)
    trainer.run()
    trainer.save(model_path, eval_log_path)
    return trainer


def write_perceptual_model(*, task: str, model: str, bank, params: dict, model_path, eval_log_path,
                           noise_sigma: float | None = None, perlin=None, in_memory: bool = False) -> None:
    """The model file of the perceptual hash ``model`` (no weights: the hash is the encoder)
    and its evaluation log: the figures of the training-time evaluation (docs/method.md section 6.6)
    at step 0, on the ``eval_size`` triplets of the train and valid splits, keyed by ``seed``
    as a trained model's are, so that a fixed hash sits on the learned models' curves."""
    if model not in HASH_BITS:
        raise InputError(f"unknown perceptual hash '{model}'; known: {', '.join(HASH_BITS)}")
    nbits = HASH_BITS[model]
    config = {"task": task, "model": model, "perceptual": model, "nbits": nbits, **params}
    if noise_sigma is not None:
        config["noise_sigma"] = noise_sigma
    hash_ = PerceptualHash(model)
    rows = []
    splits = ("train", "valid")
    for split, mosaic in zip(splits, open_mosaics(task, bank, splits, noise_sigma=noise_sigma, perlin=perlin,
                                                  in_memory=in_memory)):
        eval_set = EvalSet(mosaic, split, params["eval_size"], params["seed"])
        codes = pack_codes(encode_instances(hash_, eval_set.instances))
        figures = training_figures(codes[:, 0], codes[:, 1], codes[:, 2],
                                   {s: subset_family(nbits, s, params["seed"]) for s in range(1, 5)})
        rows.append({"step": 0, "split": split, **figures})
    with atomic_path(model_path) as tmp, open(tmp, "wb") as f:
        torch.save({"format": CHECKPOINT_FORMAT, "state_dict": {}, "config": config}, f)
    write_table(eval_log_table(rows), eval_log_path)
