from compbias.data.bbq import build_items, target_counts, target_report
from compbias.io import write_csv, write_parquet
from compbias.logs import log_to
from compbias.settings import study

with log_to(snakemake.log[0]) as log:
    cfg = study(snakemake.config)
    items = build_items(cfg.dataset, cfg.shards)
    unresolved, disagree = target_report(items)
    counts = target_counts(items)
    log.info(
        "%d items; per category: %s", items.height, dict(items.group_by("category").len().sort("category").iter_rows())
    )
    log.info("%d items with unresolved bias target: %s", unresolved.height, ", ".join(unresolved["item_id"]))
    for r in counts.filter(counts["category"] == "all").iter_rows(named=True):
        if r["n_source_label"]:
            log.info(
                "%s: source target label agrees with the derived target on %d of %d items",
                r["condition"],
                r["n_agree"],
                r["n_source_label"],
            )
    if disagree.height:
        log.warning("%d items whose source target label disagrees with the derived one", disagree.height)
    write_csv(unresolved.with_columns(unresolved["stereotyped_groups"].list.join(";")), snakemake.output.unresolved)
    write_csv(disagree, snakemake.output.disagreements)
    write_csv(counts, snakemake.output.targets)
    write_parquet(items, snakemake.output.items_table)
