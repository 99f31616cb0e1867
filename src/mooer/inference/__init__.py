"""Inference: from features to :class:`~mooer.decoding.Result`.

``pipeline`` (length-sorted batches → engine → Result, the one path every front end uses), ``engines``
(the decoder interface and its implementations), ``ctc_prefix`` (joint CTC/attention scoring),
``longform`` + ``vad`` + ``guards`` (long recordings), ``speed`` (int8, compile, statistics) and
``sharded`` (resumable decoding of long lists, under torchrun).
"""
