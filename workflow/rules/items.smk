rule items:
    output:
        items_table="results/items.parquet",
        unresolved="results/items_unresolved.csv",
        disagreements="results/items_target_disagreements.csv",
    params:
        dataset=config["dataset"],
        shards=config["shards"],
    log:
        "logs/items.log",
    benchmark:
        "results/benchmarks/items.tsv"
    script:
        "../scripts/items.py"
