# compbias: does compressing an instruction LLM create bias that perplexity does not show?
# Usage: snakemake --cores 1 all [--configfile config/demo.yaml]

# config/config.yaml is the paper's study; a --configfile given on the command line replaces it
# (several --configfile are merged in order, so a second one overrides keys of the first).
# A YAML error in the default config file is reported with its file and line
# (compbias.config.load_yaml; Snakemake's own message names neither).
if not workflow.overwrite_configfiles:
    from compbias.config import load_yaml

    load_yaml("config/config.yaml")

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/items.smk"
include: "workflow/rules/checkpoints.smk"
include: "workflow/rules/answers.smk"
include: "workflow/rules/rates.smk"
include: "workflow/rules/perplexity.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/verify.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
