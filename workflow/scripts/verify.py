from compbias.checks.verify import format_report, study_args, verify_tree

report = verify_tree(".")
print(format_report(report, study_args(snakemake.params.snakefile, snakemake.params.workdir,
                                       snakemake.params.configfiles)))
if report.problems:
    raise SystemExit(1)
