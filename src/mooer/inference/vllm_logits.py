"""mooer's logits processors inside vLLM: one vLLM processor class that runs, per request, the processors
its ``SamplingParams.extra_args["mooer"]`` specs describe (:mod:`mooer.inference.request_processors`).

vLLM builds it in its engine core (possibly a child process) from this module's import path, with the
served model's directory, whose tokenizer the hotword graphs are built with. Imports vLLM: load it only
through :mod:`mooer.inference.vllm_engine`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from mooer.inference.request_processors import RequestProcessors

log = logging.getLogger("mooer.vllm")

__all__ = ["MooERLogitsProcessor"]


class MooERLogitsProcessor(AdapterLogitsProcessor):
    """Per-request mooer processors, called with (generated (1, t), scores (1, V)) at every step."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        self.builder = RequestProcessors(vllm_config.model_config.tokenizer)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        specs = (sampling_params.extra_args or {}).get("mooer")
        if specs is not None and not (isinstance(specs, list) and all(isinstance(s, dict) for s in specs)):
            raise ValueError(f"extra_args['mooer'] must be a list of processor specs, got {specs!r}")

    def is_argmax_invariant(self) -> bool:
        return False  # hotwords and penalties change which token is best

    def new_req_logits_processor(self, params: SamplingParams):
        specs = (params.extra_args or {}).get("mooer")
        if not specs:
            return None
        processors = self.builder.build(specs)

        def apply(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            generated = torch.tensor([output_ids], dtype=torch.long, device=logits.device)
            scores = logits.unsqueeze(0)
            for processor in processors:
                scores = processor(generated, scores)
            return scores[0]

        return apply
