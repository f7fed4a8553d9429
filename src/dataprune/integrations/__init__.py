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

#: Each on-disk format: (its module in this package, that module's writer, the extra that
#: installs its library). Importing this table imports none of them.
FORMATS: dict[str, tuple[str, str, str]] = {
    "folder": ("images", "write_image_folder", "images"),
    "mds": ("mosaic", "write_mds", "mosaic"),
    "litdata": ("litdata", "write_litdata", "litdata"),
    "webdataset": ("webdataset", "write_webdataset", "webdataset"),
}
