rule gguf_source:
    output:
        directory("resources/sources/{model}"),
    params:
        gguf=lambda wc: model_source(config["models"][wc.model])[1],
        dtype=lambda wc: config["models"][wc.model].get("dtype", "bfloat16"),
    log:
        "logs/gguf_source/{model}.log",
    benchmark:
        "results/benchmarks/gguf_source/{model}.tsv"
    resources:
        mem_mb=config["cluster"]["checkpoint_mem_mb"],
        runtime=config["cluster"]["checkpoint_runtime"],
    script:
        "../scripts/gguf_source.py"


rule checkpoint:
    input:
        source=checkpoint_source,
    output:
        maybe_temp(directory("results/checkpoints/{model}/{variant}")),
    params:
        spec=lambda wc: build_spec(config["variants"], wc.variant),
        location=lambda wc, input: checkpoint_source_location(wc, input),
    log:
        "logs/checkpoint/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/checkpoint/{model}/{variant}.tsv"
    threads: config["runtime"]["threads"]
    resources:
        mem_mb=config["cluster"]["checkpoint_mem_mb"],
        runtime=config["cluster"]["checkpoint_runtime"],
        gpu=config["cluster"]["gpu"],
    script:
        "../scripts/checkpoint.py"


rule variants_table:
    input:
        expand("results/checkpoints/{model}/{variant}", model=MODELS, variant=VARIANTS),
    output:
        "results/variants.parquet",
    params:
        models=MODELS,
        variants=VARIANTS,
        baseline=BASELINE,
    log:
        "logs/variants_table.log",
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["light_runtime"],
    script:
        "../scripts/variants_table.py"
