"""What a reader sees: ``summary.md`` (:mod:`.summary`, its per-variant lines in
:mod:`.summary_lines`) and the figures (:mod:`.figures`), from the tables of :mod:`compbias.stats`.
Number formatting is defined once, in :mod:`.numbers`; variant order comes from
:mod:`compbias.stats.variants`."""
