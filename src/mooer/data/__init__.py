"""Training data: manifests, batch samplers, the speech dataset, augmentation, tar shards, importers.

- :mod:`mooer.data.manifest` — the JSONL manifest (:class:`Utterance`, :func:`read_manifest`, :func:`write_manifest`)
- :mod:`mooer.data.sampler` — :class:`DynamicBucketSampler`, :class:`FixedSizeSampler`, :func:`padding_fraction`
- :mod:`mooer.data.dataset` — :class:`TaskMix`, :class:`SpeechDataset`, :class:`Sample`, :func:`collate`, :class:`TrainBatch`
- :mod:`mooer.data.augment` — speed perturbation, additive noise, SpecAugment (off by default)
- :mod:`mooer.data.shards` — the official tar shard format: writer, streaming reader, random access
- :mod:`mooer.data.prepare` — importers: Kaldi data dirs, official shard lists; packing into shards
"""

from mooer.data.dataset import Sample, SpeechDataset, TaskMix, TrainBatch, collate
from mooer.data.manifest import ManifestRead, Utterance, read_manifest, write_manifest
from mooer.data.sampler import DynamicBucketSampler, FixedSizeSampler, padding_fraction

__all__ = [
    "Utterance",
    "ManifestRead",
    "read_manifest",
    "write_manifest",
    "DynamicBucketSampler",
    "FixedSizeSampler",
    "padding_fraction",
    "TaskMix",
    "Sample",
    "TrainBatch",
    "SpeechDataset",
    "collate",
]
