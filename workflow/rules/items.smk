rule items:
    input:
        # ancient: a touched file does not rerun; an edit of a record the study uses changes
        # params.data (a digest of those records, checked before the DAG: compbias.checks.inputs)
        bbq=bbq_files(),
    output:
        items_table="results/items.parquet",
        unresolved="results/items_unresolved.csv",
        disagreements="results/items_target_disagreements.csv",
        targets="results/items_targets.csv",
    log:
        "logs/items.log",
    benchmark:
        "results/benchmarks/items.tsv"
    resources:
        mem_mb=config["cluster"]["light_mem_mb"],
        runtime=config["cluster"]["light_runtime"],
    params:
        dataset=config["dataset"],
        shards=config["shards"],
        data=PREFLIGHT.digest,
    script:
        "../scripts/items.py"
