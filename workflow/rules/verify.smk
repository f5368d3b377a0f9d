# `snakemake verify`: check every shard, table and checkpoint under results/ (compbias.checks.verify) and
# print the command that rebuilds the corrupt or incomplete ones; fails when there are any.


rule verify:
    log:
        "logs/verify.log",
    localrule: True
    params:
        snakefile=workflow.main_snakefile,
        workdir=os.getcwd(),
        configfiles=[str(p) for p in workflow.overwrite_configfiles],
    script:
        "../scripts/verify.py"
