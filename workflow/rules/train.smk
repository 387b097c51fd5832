# Training (docs/method.md section 6). Checkpoints live beside the model and are not outputs, so a
# training killed by a time limit resumes from the last one when the rule runs again.


rule train:
    wildcard_constraints:
        model=LEARNED_MODELS,
    input:
        data=task_data_files,
        untrained=untrained_guard,
    output:
        model=f"{MODEL}/model.pt",
        eval_log=f"{MODEL}/eval_log.parquet",
    params:
        model=model_params,
        nbits=lambda w: task_config(w)["nbits"],
        data=task_data,
        noise=task_noise,
        network=lambda w: task_config(w).get("network"),
        checkpoint_dir=lambda w, output: str(Path(output.model).parent / "checkpoints"),
    threads: job_threads("train")
    resources:
        **job_resources("train"),
    conda:
        ENV
    log:
        f"{LOGS}/train/{{task}}/{{model}}/{{variant}}.log",
    script:
        "../scripts/train.py"


rule perceptual_model:
    # A perceptual hash needs no training: its model file names the hash, and its
    # evaluation log holds the training-time figures of the hash at step 0.
    wildcard_constraints:
        model=PERCEPTUAL_HASHES,
    input:
        data=task_data_files,
    output:
        model=f"{MODEL}/model.pt",
        eval_log=f"{MODEL}/eval_log.parquet",
    params:
        model=model_params,
        data=task_data,
        noise=task_noise,
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/perceptual_model/{{task}}/{{model}}/{{variant}}.log",
    script:
        "../scripts/perceptual_model.py"


rule plot_training:
    input:
        f"{MODEL}/eval_log.parquet",
    output:
        f"{MODEL}/training_curves.png",
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/plot_training/{{task}}/{{model}}/{{variant}}.log",
    script:
        "../scripts/plot_training.py"


# A model block with `pretrained:` (a model.pt, a run bundle or builtin:NAME) takes its
# model from there instead of training it: rule pretrained_model checks the model file
# against the block and copies it; everything downstream runs as usual. The two rules make
# the same files; each one's input names a file no rule makes where the other one applies.
ruleorder: pretrained_model > train


rule pretrained_model:
    wildcard_constraints:
        model=LEARNED_MODELS,
    input:
        pretrained_source,
    output:
        model=f"{MODEL}/model.pt",
        eval_log=f"{MODEL}/eval_log.parquet",
    params:
        expected=pretrained_expectations,
    resources:
        **job_resources("small"),
    conda:
        ENV
    log:
        f"{LOGS}/pretrained_model/{{task}}/{{model}}/{{variant}}.log",
    script:
        "../scripts/pretrained_model.py"
