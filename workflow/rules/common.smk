# Paths, config look-ups and input functions shared by the rules.
from pathlib import Path

import yaml

from equihash.bundle import pretrained_path
from equihash.config import bank_request, canonical, check_config, compared_models, load_schema, load_variants
from equihash.models import HASH_BITS, MODEL_OBJECTIVE
from equihash.nn.precision import resolve_precision
from equihash.layout import bank_location, perlin_file, template
from equihash.report.runs import configured_runs
from equihash.tasks import get_task, task_names

# Registers the tasks of config task_modules (for the job scripts too), then checks every value.
check_config(config)

SCHEMA = load_schema()  # config/schema.yaml with each registered task's block
# Every value that reaches a rule's params in canonical form (keys sorted, integers written
# for numbers as floats): Snakemake compares params by their text, so a restated default in
# another key order, or 10 for 10.0, must not rerun anything.
config.update(canonical(dict(config), SCHEMA))
# encode.precision auto is resolved here, on the machine that runs Snakemake, so that every
# shard and query of a database is encoded at one precision, and the rules' params and the
# provenance hold the one used (on a cluster whose nodes differ from this machine, set it).
config["encode"]["precision"] = resolve_precision(config["encode"]["precision"], config["encode"]["device"],
                                                  "encode")

R = config["results"]
# (task, model) -> {table: {variant: model block}}: the rows of <variants>/<task>/<model>/<table>.tsv
VARIANT_TABLES = load_variants(config["variants"], config, SCHEMA)
VARIANT_PARAMS = {
    (task, model, variant): canonical(params, SCHEMA,
                                      SCHEMA["$defs"][get_task(task).schema]["properties"]["models"]["properties"][model])
    for (task, model), tables in VARIANT_TABLES.items()
    for rows in tables.values()
    for variant, params in rows.items()
}


wildcard_constraints:
    task="[A-Za-z0-9]+",
    model="[A-Za-z0-9]+",
    variant="[A-Za-z0-9_.-]+",
    db="[A-Za-z0-9_]+",
    shard=r"\d+",
    nb_shards=r"\d+",
    part=r"\d+",
    nb_parts=r"\d+",


def task_config(wildcards):
    return config["tasks"][wildcards.task]


def model_params(wildcards):
    """The model block of a variant: the config's for `main`, else its variant-table row."""
    if wildcards.variant == "main":
        return config["tasks"][wildcards.task]["models"][wildcards.model]
    return VARIANT_PARAMS[(wildcards.task, wildcards.model, wildcards.variant)]


def pretrained_source(wildcards):
    """The file a model block's `pretrained:` names (builtin:NAME: the one the package
    ships), or, for a block without it, a name no rule makes: rule pretrained_model then
    does not apply."""
    source = model_params(wildcards).get("pretrained")
    return str(pretrained_path(source)) if source else "(this model block has no pretrained:)"


def untrained_guard(wildcards):
    """Nothing for a model to train; for a block with `pretrained:`, a name no rule makes,
    so that rule train never replaces a pretrained model (a missing file is then an error)."""
    return ["(this model block is pretrained: it is not trained)"] if model_params(wildcards).get("pretrained") else []


def pretrained_expectations(wildcards):
    """What a pretrained model file must record to serve this run (equihash.bundle.install_pretrained)."""
    tc = task_config(wildcards)
    return {"task": wildcards.task, "model": wildcards.model, "nbits": tc["nbits"], "network": tc.get("network"),
            **task_noise(wildcards)}


# Model names the train rule builds, and the perceptual hashes (rule perceptual_model).
LEARNED_MODELS = "|".join(MODEL_OBJECTIVE)
PERCEPTUAL_HASHES = "|".join(HASH_BITS)


def model_nbits(wildcards):
    """Bits of a model's fingerprints: the hash's own for a perceptual hash, else the task's."""
    return HASH_BITS.get(wildcards.model, task_config(wildcards)["nbits"])


def database_config(wildcards):
    return config["tasks"][wildcards.task]["databases"][wildcards.db]


# The results layout (equihash/layout.py, the one the library reads too).
BANKS = template(R, "banks")  # a prepared bank: bank.hdf5, or one file per split (the task's BankFormat)
PERLIN = template(R, "perlin")
LABELS = template(R, "labels")
MODEL = template(R, "model")
FINGERPRINTS = template(R, "fingerprints")
INDEX = template(R, "index")  # partitions.json and one folder per partition
INDEX_PARTITION = f"{INDEX}/{{part}}-of-{{nb_parts}}"
PARTITION_COUNTS = f"{template(R, 'metrics')}/partitions/{{part}}-of-{{nb_parts}}.parquet"
METRICS = f"{template(R, 'metrics')}/metrics.json"
RUN_CONFIG = f"{template(R, 'metrics')}/run_config.json"
LOGS = template(R, "logs")


def metrics_of(task, models, variants=("main",)):
    return [
        METRICS.format(task=task, model=model, variant=variant, db=db)
        for model in models
        for variant in variants
        for db in config["tasks"][task]["databases"]
    ]


# The runs that `snakemake` evaluates: run_tasks x run_models x databases, variant main.
RUNS = configured_runs(config)


def run_metrics(runs=RUNS):
    return [METRICS.format(task=r.task, model=r.model, variant=r.variant, db=r.database) for r in runs]


def all_targets():
    """What `snakemake` builds: the metrics of RUNS, the training curves of their models and
    a picture of each run task's mosaics (the report's files: report_targets)."""
    models = dict.fromkeys((r.task, r.model) for r in RUNS)
    return ([f"{R}/mosaics/{task}/examples.png" for task in config["run_tasks"]] + run_metrics()
            + [f"{MODEL}/training_curves.png".format(task=task, model=model, variant="main") for task, model in models])


# --------------------------------------------------------------------------- task data
# What each task needs is its record in the task registry (equihash.tasks): how its bank is
# kept, whether its noise reads the Perlin file, which keys of its block set the noise.
def tasks_keeping_banks(single_file):
    """The registered tasks whose prepared bank is one file (True) or one file per split
    (False): the wildcard constraint of the rule that prepares it."""
    return "|".join(name for name in task_names() if get_task(name).bank.single_file == single_file) or "^$"


def task_data(wildcards, input):
    """Where a task's data lie and how to read them: the keyword arguments bank, perlin and
    in_memory of equihash.tasks.open_mosaic. Its paths are the rule's inputs and
    in_memory changes no output, so it takes `input`: Snakemake then treats it as derived
    from the input files and leaves it out of the params it compares."""
    data = {"bank": bank_location(config, wildcards.task), "in_memory": task_config(wildcards)["bank"].get("in_memory", False)}
    if get_task(wildcards.task).perlin:
        data["perlin"] = perlin_file(config)
    return data


def task_noise(wildcards):
    """The settings of a task's noise besides its files (the Perlin file is an input): the
    keys of its block that its record names, e.g. noise_sigma."""
    return {key: task_config(wildcards)[key] for key in get_task(wildcards.task).noise}


def instance_keys(wildcards):
    """What keys a database's instances besides its labels file: its split and seed."""
    db = database_config(wildcards)
    return {"split": db["split"], "seed": db["seed"]}


def bank_files(wildcards):
    """The file(s) of a task's bank."""
    return get_task(wildcards.task).bank.paths(bank_location(config, wildcards.task))


def task_data_files(wildcards):
    """The files behind task_data: the bank file(s) and the Perlin file of a task whose noise reads it."""
    return bank_files(wildcards) + ([perlin_file(config)] if get_task(wildcards.task).perlin else [])


def index_partitions(wildcards):
    """The index.partitions folders of a run's index."""
    n = config["index"]["partitions"]
    return [INDEX_PARTITION.format(**wildcards, part=v, nb_parts=n) for v in range(n)]


def partition_counts(wildcards):
    """What each index partition contributes to a run's figures (rule evaluate_partition)."""
    n = config["index"]["partitions"]
    return [PARTITION_COUNTS.format(**wildcards, part=v, nb_parts=n) for v in range(n)]


def database_shards(wildcards):
    n = config["encode"]["nb_shards"]
    return [f"{FINGERPRINTS}/shards/{i}-of-{n}.parquet".format(**wildcards) for i in range(n)]


# --------------------------------------------------------------------------- cluster execution
# The conda environment every rule declares (snakemake --sw-deployment-method conda).
ENV = f"{workflow.basedir}/envs/equihash.yaml"


def job_resources(job_class, mem_mb=None):
    """The SLURM resources of a job of one class of config `cluster` (train, encode, cpu,
    small): partition and account when set, CPUs, memory, time limit and, for the classes
    with a `gpus` entry above 0, a GRES GPU request; `mem_mb` replaces the class's memory
    (the partition jobs take config index.memory_mb). A job resubmitted after a failure
    (profile `retries`) gets the time limit times its attempt, so that a training killed
    by its limit resumes from its checkpoint with more time. A local run ignores them all."""
    cluster = config["cluster"]
    job = cluster["jobs"][job_class]

    def runtime(wildcards, attempt):
        return job["runtime"] * attempt

    resources = {"cpus_per_task": job["cpus"], "mem_mb": job["mem_mb"] if mem_mb is None else mem_mb, "runtime": runtime}
    if cluster["partition"]:
        resources["slurm_partition"] = cluster["partition"]
    if cluster["account"]:
        resources["slurm_account"] = cluster["account"]
    gpus = cluster["gpus"].get(job_class, 0)
    if gpus:
        resources["gres"] = ":".join(["gpu", *([cluster["gpu_type"]] if cluster["gpu_type"] else []), str(gpus)])
    return resources


def job_threads(job_class, local=None):
    """Threads of a job, decided when the job is scheduled: on a cluster its class's CPUs
    (config `cluster.jobs`, what SLURM allocates); locally `local`, or every core of --cores."""

    def threads(wildcards):
        if workflow.non_local_exec or workflow.remote_exec:
            return config["cluster"]["jobs"][job_class]["cpus"]
        return workflow.cores if local is None else local

    return threads


def run_config(wildcards):
    """Everything that determines the figures of one metrics.json: the task's data and noise
    settings (its bank request, noise, network, fingerprint bits, the Perlin block of a task
    that reads the Perlin file), the model parameters of this variant, the database
    parameters, where and how the encoder ran (encode.device, encode.precision,
    encode.forward_batch) and the multi-probe lookups (the shard count is recorded beside it).
    Its sha256 is the provenance's config hash; results paths and cluster resources are not
    in it."""
    tc = task_config(wildcards)
    task = {"bank": bank_request(tc["bank"]), "nbits": model_nbits(wildcards),
            **{key: tc[key] for key in (*get_task(wildcards.task).noise, "network") if key in tc}}
    if get_task(wildcards.task).perlin:
        task["perlin"] = config["perlin"]
    return canonical({
        "task": wildcards.task,
        "task_params": task,
        "model": wildcards.model,
        "variant": wildcards.variant,
        "model_params": model_params(wildcards),
        "database": wildcards.db,
        "database_params": database_config(wildcards),
        "encode_device": config["encode"]["device"],
        "encode_precision": config["encode"]["precision"],
        "encode_forward_batch": config["encode"]["forward_batch"],
        "multiprobe_lookups": config["evaluate"]["multiprobe_lookups"],
    }, SCHEMA, {})
