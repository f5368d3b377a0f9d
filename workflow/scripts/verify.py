from compbias.checks.verify import format_report, study_args, verify_tree
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    report = verify_tree(".")
    text = format_report(
        report, study_args(snakemake.params.snakefile, snakemake.params.workdir, snakemake.params.configfiles)
    )
    log.info("%s", text)
print(text)  # the report is this rule's message to the user: on the terminal, not only the log
if report.problems:
    raise SystemExit(1)
