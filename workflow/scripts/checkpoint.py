from compbias.compress.checkpoints import build_checkpoint
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    manifest = build_checkpoint(
        snakemake.params.location,
        snakemake.output[0],
        snakemake.params.spec,
        snakemake.wildcards.model,
        snakemake.wildcards.variant,
    )
    log.info("manifest %s", manifest)
