"""dataprune: dynamic data pruning for PyTorch training loops.

Three lines in a loop::

    pruner = dataprune.Pruner(len(train_set), method="epsilon-greedy", prune=0.5, epochs=E)
    loader = DataLoader(dataprune.IndexedDataset(train_set), batch_size=B,
                        sampler=pruner.sampler())
    for epoch in range(E):
        pruner.set_epoch(epoch)
        for idx, (x, y) in loader:
            loss = pruner.record(idx, F.cross_entropy(model(x), y, reduction="none"))
            ...
"""

from .losses import classification_predictions, sequence_losses, token_losses
from .policies import POLICIES, Option, Policy, Selection, SelectionContext, methods, register
from .pruner import Pruner
from .sampler import IndexedCollator, IndexedDataset, IndexedDictDataset, PrunedSampler
from .stats import SampleStats

__all__ = [
    "POLICIES",
    "IndexedCollator",
    "IndexedDataset",
    "IndexedDictDataset",
    "Option",
    "Policy",
    "PrunedSampler",
    "Pruner",
    "SampleStats",
    "Selection",
    "SelectionContext",
    "classification_predictions",
    "methods",
    "register",
    "sequence_losses",
    "token_losses",
]
__version__ = "0.1.0"
