"""Pseudo-labelling: label unlabelled audio with teacher models, keep the labels worth trusting, train.

``mooer pseudo-label`` (:mod:`mooer.labelling.jobs`, :mod:`mooer.labelling.label`) writes, per utterance, the
teachers' texts and the evidence for trusting them (:mod:`mooer.labelling.evidence`); ``mooer filter``
(:mod:`mooer.labelling.filter`) keeps the reliable ones and writes a training manifest.
"""
