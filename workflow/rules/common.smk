# Paths, config look-ups and input functions shared by the rules.
from equihash.config import bank_request, check_config

check_config(config)

R = config["results"]
VARIANTS = ["main"]  # variant tables (config/variants/) add more


wildcard_constraints:
    task="[A-Za-z0-9]+",
    model="[A-Za-z0-9]+",
    variant="[A-Za-z0-9_]+",
    db="[A-Za-z0-9_]+",
    shard=r"\d+",
    nb_shards=r"\d+",


def task_config(wildcards):
    return config["tasks"][wildcards.task]


def model_params(wildcards):
    return config["tasks"][wildcards.task]["models"][wildcards.model]


def database_config(wildcards):
    return config["tasks"][wildcards.task]["databases"][wildcards.db]


BANK = f"{R}/banks/{{task}}/bank.hdf5"
LABELS = f"{R}/labels/{{task}}/{{db}}"
MODEL = f"{R}/models/{{task}}/{{model}}/{{variant}}"
FINGERPRINTS = f"{R}/fingerprints/{{task}}/{{model}}/{{variant}}/{{db}}"
INDEX = f"{R}/index/{{task}}/{{model}}/{{variant}}/{{db}}"
METRICS = f"{R}/metrics/{{task}}/{{model}}/{{variant}}/{{db}}/metrics.json"
LOGS = f"{R}/logs"


def all_metrics():
    return [
        METRICS.format(task=task, model=model, variant=variant, db=db)
        for task, tc in config["tasks"].items()
        for model in tc["models"]
        for variant in VARIANTS
        for db in tc["databases"]
    ]


def database_shards(wildcards):
    n = config["encode"]["nb_shards"]
    return [f"{FINGERPRINTS}/shards/{i}-of-{n}.parquet".format(**wildcards) for i in range(n)]
