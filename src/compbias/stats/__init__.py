"""Statistics on the answers table: rates and BBQ bias scores (:mod:`.metrics`), item-level
transitions and their nulls (:mod:`.transitions`, :mod:`.virtual_seeds`, :mod:`.emergence`,
:mod:`.direction`, :mod:`.controls`, the floors for independent re-runs in :mod:`.floors`), clustered logistic regressions (:mod:`.regression`),
perplexity statistics, and :mod:`.analysis`, which builds every analysis table of a study."""
