"""The study's figures (matplotlib on an Agg canvas, no pyplot), each written as ``{out}.png`` and
``{out}.pdf`` from the tables of :mod:`compbias.stats`: answer roles vs precision (:mod:`.rates`),
perplexity change vs the change in stereotype reliance (:mod:`.perplexity`), the category heatmap
(:mod:`.categories`), pruning vs measured sparsity (:mod:`.pruning`) and emergence with its
expected range and direction (:mod:`.transitions`); the canvas, saving, placeholders, colours and
shared helpers are in :mod:`.common`. Every figure tolerates NaN, missing and empty tables."""

from compbias.report.figures.categories import category_heatmap
from compbias.report.figures.common import placeholder, save_figure
from compbias.report.figures.perplexity import perplexity_vs_bias
from compbias.report.figures.pruning import pruning
from compbias.report.figures.rates import dose_response
from compbias.report.figures.transitions import emergence_figure

__all__ = [
    "category_heatmap",
    "dose_response",
    "emergence_figure",
    "perplexity_vs_bias",
    "placeholder",
    "pruning",
    "save_figure",
]
