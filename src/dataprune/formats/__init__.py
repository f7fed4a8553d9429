"""Data past memory: one thin module per storage format, each behind its own extra.

None needs torchvision.

- :mod:`dataprune.formats.images`: PNG encode/decode and an on-disk image folder
  (``pip install 'dataprune[images]'``, Pillow).
- :mod:`dataprune.formats.mosaic`: MosaicML Streaming MDS shards (``[mosaic]``).
- :mod:`dataprune.formats.litdata`: LitData optimized chunks (``[litdata]``).
- :mod:`dataprune.formats.webdataset`: WebDataset tar shards (``[webdataset]``).
- :mod:`dataprune.formats.prepare`: writes an image array into any of these formats.

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
