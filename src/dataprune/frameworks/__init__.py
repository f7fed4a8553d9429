"""Training frameworks, each a thin module on the core's public API and one extra library.

- :mod:`dataprune.frameworks.lightning`: a Lightning Callback (``[lightning]``).
- :mod:`dataprune.frameworks.hf`: a Hugging Face Trainer subclass (``[hf]``).
- :mod:`dataprune.frameworks.accelerate`: a prepared loader for Accelerate loops (``[hf]``).
"""

from ..errors import InvalidValue
from ..policies import POLICIES, get_policy


def framework_methods() -> list[str]:
    """The methods a framework that owns the training loop (Lightning, the HF Trainer) runs
    unchanged: all but those that need steps of their own inside the loop (thinning a batch
    after its forward pass, predictions passed to ``record``, a scaled learning rate)."""
    return [name for name in POLICIES if not _needs_loop_steps(name)]


def check_framework_method(method: str, framework: str) -> None:
    """Refuse ``method`` where ``framework`` owns the loop and the method needs steps in it."""
    if _needs_loop_steps(method):
        raise InvalidValue(
            f"method={method!r} needs steps of its own in the training loop "
            f"(selective-backprop: Pruner.select_batch; kakurenbo: record(correct=, "
            f"confidence=), Pruner.lr_scale and the hidden samples' refresh), which {framework} "
            f"does not run; choose one of: {', '.join(framework_methods())}, or use the method "
            "in your own loop (README: Quickstart)"
        )


def _needs_loop_steps(method: str) -> bool:
    policy = get_policy(method)
    return policy.selects_in_batch or policy.uses_predictions or policy.scales_lr
