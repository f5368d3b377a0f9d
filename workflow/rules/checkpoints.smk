rule gguf_source:
    output:
        directory("resources/sources/{model}"),
    log:
        "logs/gguf_source/{model}.log",
    benchmark:
        "results/benchmarks/gguf_source/{model}.tsv"
    resources:
        mem_mb=config["cluster"]["checkpoint_mem_mb"],
        runtime=config["cluster"]["checkpoint_runtime"],
    params:
        gguf=lambda wc: model_source(config["models"][wc.model])[1],
        dtype=lambda wc: variant_dtype(config["models"][wc.model]),
    script:
        "../scripts/gguf_source.py"


rule checkpoint:
    input:
        source=checkpoint_source,
    output:
        # {ckey}: content key of the source and spec (checkpoint_dir in common.smk)
        maybe_temp(directory("results/checkpoints/{model}/{variant}/{ckey}")),
    log:
        "logs/checkpoint/{model}/{variant}/{ckey}.log",
    benchmark:
        "results/benchmarks/checkpoint/{model}/{variant}/{ckey}.tsv"
    threads: config["runtime"]["threads"]
    resources:
        mem_mb=config["cluster"]["checkpoint_mem_mb"],
        runtime=config["cluster"]["checkpoint_runtime"],
        gpu=config["cluster"]["gpu"],
        gpu_mem_mb=checkpoint_gpu_mem,
    params:
        spec=lambda wc: build_spec(config["variants"], wc.variant),
        location=lambda wc, input: checkpoint_source_location(wc, input),
    script:
        "../scripts/checkpoint.py"


rule variants_table:
    input:
        [checkpoint_dir(m, v) for m in MODELS for v in VARIANTS],
    output:
        "results/variants.parquet",
    log:
        "logs/variants_table.log",
    benchmark:
        "results/benchmarks/variants_table.tsv"
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["light_runtime"],
    params:
        models=MODELS,
        variants=VARIANTS,
        baseline=BASELINE,
    script:
        "../scripts/variants_table.py"
