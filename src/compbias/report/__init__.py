"""What a reader sees: ``summary.md`` (:mod:`.summary`) and the figures, from the tables of
:mod:`compbias.stats`. Variant ordering and number formatting are defined once here."""
