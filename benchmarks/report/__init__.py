"""docs/RESULTS.md and the README's headline, from the committed result files alone.

The settings' metrics, the targets, the peer comparisons, the claims, the archived-results rule
and the errata are data (:mod:`report.tables`); :mod:`report.evidence` measures the result files
against them, paired by seed; :mod:`report.render` writes the markdown and the plots. Run
``python benchmarks/reproduce.py --report``.
"""

from .render import headline_markdown, write_results_md

__all__ = ["headline_markdown", "write_results_md"]
