"""dataprune: dynamic data pruning for PyTorch training loops.

The same loop for every method::

    pruner = dataprune.Pruner(len(train_set), epochs=E)
    loader = DataLoader(dataprune.IndexedDataset(train_set), batch_size=B,
                        sampler=pruner.sampler())
    for epoch in range(E):
        pruner.set_epoch(epoch)
        for idx, batch in loader:
            loss = pruner.loss(idx, batch, sample_losses)  # one loss per sample
            ...  # backward, step
        pruner.end_epoch(model, loader, sample_losses)

A new method is one :class:`Policy` subclass, ``@register``-ed.
"""

from .data import IndexedCollator, IndexedDataset, IndexedDictDataset
from .errors import DataPruneError
from .losses import sequence_losses, token_losses
from .policies import Option, Policy, Selection, SelectionContext, methods, register, unseen_first
from .pruner import Pruner

__all__ = [
    "DataPruneError",
    "IndexedCollator",
    "IndexedDataset",
    "IndexedDictDataset",
    "Option",
    "Policy",
    "Pruner",
    "Selection",
    "SelectionContext",
    "methods",
    "register",
    "sequence_losses",
    "token_losses",
    "unseen_first",
]
__version__ = "0.1.0"
