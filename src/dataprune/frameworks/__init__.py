"""Training frameworks, each a thin module on the core's public API and one extra library.

- :mod:`dataprune.frameworks.lightning`: a Lightning Callback (``[lightning]``).
- :mod:`dataprune.frameworks.hf`: a Hugging Face Trainer subclass (``[hf]``).
- :mod:`dataprune.frameworks.accelerate`: a prepared loader for Accelerate loops (``[hf]``).

Each runs every registered method: a method's own steps are the Pruner's hooks, which they
call (``loss`` for each batch, ``end_epoch`` after each epoch).
"""
