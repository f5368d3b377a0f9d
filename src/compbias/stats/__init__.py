"""Statistics on the answers table: rates and BBQ bias scores (:mod:`.metrics`), item-level
transitions (:mod:`.transitions`) and their nulls (:mod:`.virtual_seeds`, :mod:`.emergence`,
:mod:`.direction`, :mod:`.controls`; the floors for independent re-runs in :mod:`.floors`), the
clustered binomial GLM (:mod:`.glm`) and the study's regressions (:mod:`.regression`), perplexity
statistics, variant order (:mod:`.variants`), and :mod:`.analysis`, which builds every analysis
table of a study."""
