"""Optional integrations, each a thin module on the core's public API and one extra library.

Training frameworks (see the README's "Frameworks" section):

- :mod:`dataprune.integrations.lightning`: a Lightning Callback (``[lightning]``).
- :mod:`dataprune.integrations.hf`: a Hugging Face Trainer subclass (``[hf]``).
- :mod:`dataprune.integrations.accelerate`: a prepared loader for Accelerate loops (``[hf]``).

Data past memory (each module needs its extra; none needs torchvision):

- :mod:`dataprune.integrations.images`: PNG encode/decode and an on-disk image folder
  (``pip install 'dataprune[images]'``, Pillow).
- :mod:`dataprune.integrations.mosaic`: MosaicML Streaming MDS shards (``[mosaic]``).
- :mod:`dataprune.integrations.litdata`: LitData optimized chunks (``[litdata]``).
- :mod:`dataprune.integrations.webdataset`: WebDataset tar shards (``[webdataset]``).
- :mod:`dataprune.integrations.prepare`: writes an image array into any of these formats.

Indexable formats (folder, MDS, LitData) are read through ``pruner.sampler()``: a pruned sample
is never read nor decoded. WebDataset tars are sequential: a filter on the member names drops
pruned samples before their bytes are extracted or decoded.
"""

from .. import POLICIES
from ..policies import get_policy


def framework_methods() -> list[str]:
    """The methods a framework that owns the training loop (Lightning, the HF Trainer) runs
    unchanged: all but those that need steps of their own inside the loop (thinning a batch
    after its forward pass, predictions passed to ``record``, a scaled learning rate)."""
    return [name for name in POLICIES if not _needs_loop_steps(name)]


def check_framework_method(method: str, framework: str) -> None:
    """Refuse ``method`` where ``framework`` owns the loop and the method needs steps in it."""
    if _needs_loop_steps(method):
        raise ValueError(
            f"method={method!r} needs steps of its own in the training loop "
            f"(selective-backprop: Pruner.select_batch; kakurenbo: record(correct=, "
            f"confidence=), Pruner.lr_scale and the hidden samples' refresh), which {framework} "
            f"does not run; choose one of: {', '.join(framework_methods())}, or use the method "
            "in your own loop (README: Quickstart)"
        )


def _needs_loop_steps(method: str) -> bool:
    policy = get_policy(method)
    return policy.selects_in_batch or policy.uses_predictions or policy.scales_lr


#: Each on-disk format: (its module in this package, that module's writer, the extra that
#: installs its library). Importing this table imports none of them.
FORMATS: dict[str, tuple[str, str, str]] = {
    "folder": ("images", "write_image_folder", "images"),
    "mds": ("mosaic", "write_mds", "mosaic"),
    "litdata": ("litdata", "write_litdata", "litdata"),
    "webdataset": ("webdataset", "write_webdataset", "webdataset"),
}
