"""The MooER network: SANM encoder → adapter → splice into the prompt → causal LLM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig

from mooer.decoding import DecodingOptions
from mooer.models.adapter import LinearAdapter
from mooer.models.sanm import SANMEncoder
from mooer.models.alignment import ctc_forced_align, guided_attention_loss
from mooer.models.hf_compat import cache_kwarg, new_cache
from mooer.prompting import IGNORE_INDEX, TokenBatch


class MooERNetwork(nn.Module):
    """Holds the three parts; knows how to encode audio, splice it, compute the loss and generate."""

    def __init__(self, encoder: SANMEncoder, adapter: LinearAdapter, llm: nn.Module, eos_id: int, pad_id: int):
        super().__init__()
        self.encoder = encoder
        self.adapter = adapter
        self.llm = llm
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.ctc_head: nn.Linear | None = None  # auxiliary CTC head: a training loss, and joint decoding
        self.guided_attention: tuple[int, int] | None = None  # training-only (layer, head), see attach_…
        self.shared_prefill = True  # beam search: one prefill per utterance, not per beam (exact, see generate)
        self.static_cache = False  # a static KV cache for generate (compile_model, CUDA), no shared prefill
        # Nothing may leak from the LLM directory's generation_config.json (stock Qwen's top_k=20, sampling
        # settings): every generation parameter comes from DecodingOptions.
        self.llm.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None)

    @property
    def device(self) -> torch.device:
        return next(self.adapter.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.adapter.parameters()).dtype

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T6, 560) padded features + true lengths → (B, T6 // k, llm_dim) audio embeddings."""
        return self.adapter(self.encoder(features.to(self.dtype), lengths))

    def embed(self, tokens: TokenBatch, audio: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the audio embeddings written over each row's audio span (the official splice)."""
        embed_tokens = self.llm.get_input_embeddings()
        text = embed_tokens(tokens.input_ids.clamp_min(0))
        modality = tokens.modality_mask
        if audio.shape[1] == 0:
            return text.masked_fill(modality.unsqueeze(-1), 0.0)
        index = modality.long().cumsum(dim=1) - 1  # position inside the audio span
        valid = modality & (index < audio.shape[1])
        index = index.clamp(0, audio.shape[1] - 1)
        spliced = torch.gather(audio.to(text.dtype), 1, index.unsqueeze(-1).expand(-1, -1, audio.shape[-1]))
        out = torch.where(valid.unsqueeze(-1), spliced, text)
        return out.masked_fill((modality & ~valid).unsqueeze(-1), 0.0)

    def inputs_embeds(self, features: torch.Tensor, lengths: torch.Tensor, tokens: TokenBatch) -> torch.Tensor:
        return self.embed(tokens, self.encode(features, lengths))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, tokens: TokenBatch,
                ctc_targets: list | None = None):
        """Training forward: HF causal-LM output with the token-mean cross-entropy over answer tokens.

        With a CTC head attached (:meth:`attach_ctc_head`) and ``ctc_targets`` (per row a list of token ids,
        or None to leave the row out), the output also carries ``ctc_loss``: an auxiliary CTC loss of the
        encoder states against the transcript, which speeds up training an encoder from scratch.
        With guided attention attached (:meth:`attach_guided_attention`), it also carries ``align_loss``.
        """
        encoded = self.encoder(features.to(self.dtype), lengths)
        embeds = self.embed(tokens, self.adapter(encoded))
        # from the mask, as generation does: left padding must not shift a row's positions
        position_ids = (tokens.attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)
        guided = self.guided_attention is not None and self.ctc_head is not None and ctc_targets is not None
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=tokens.attention_mask.long(),
            position_ids=position_ids,
            labels=tokens.labels,
            output_attentions=guided,
        )
        if self.ctc_head is not None and ctc_targets is not None:
            out["ctc_loss"], rows, log_probs = self.ctc_loss(encoded, lengths, ctc_targets)
            if guided:
                out["align_loss"] = self._guided_attention_loss(out.attentions, tokens, ctc_targets, rows,
                                                                log_probs, lengths)
        return out

    def attach_guided_attention(self, layer: int, head: int) -> None:
        """Train LLM attention head ``(layer, head)`` to look, when predicting a transcript token, at the audio
        tokens a CTC forced alignment gives that token (``align_loss`` in the output; needs a CTC head and
        ``ctc_targets``). Switches the LLM to eager attention, which returns the probabilities."""
        cfg = self.llm.config
        if not (0 <= layer < cfg.num_hidden_layers and 0 <= head < cfg.num_attention_heads):
            raise ValueError(f"no attention head ({layer}, {head}) in an LLM of {cfg.num_hidden_layers} layers "
                             f"× {cfg.num_attention_heads} heads")
        self.llm.set_attn_implementation("eager")
        self.guided_attention = (layer, head)

    def _guided_attention_loss(self, attentions, tokens: TokenBatch, targets: list, rows: list[int],
                               log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        layer, head = self.guided_attention
        lp = log_probs.detach().float().cpu().numpy()  # (T, rows, C)
        per_token = self.adapter.k  # encoder frames per audio token
        labels = tokens.labels.cpu()
        alignments: list = [None] * len(targets)
        for r, i in enumerate(rows):
            answer = labels[i][labels[i] != IGNORE_INDEX].tolist()
            if answer[: len(targets[i])] != list(targets[i]):
                continue  # the answer does not start with the transcript
            path = ctc_forced_align(lp[: int(lengths[i]), r], targets[i], blank=lp.shape[-1] - 1)
            if path is not None:  # an audio token carries the token of any of its frames
                n = len(path) // per_token
                path = path[: n * per_token].reshape(n, per_token).max(axis=1)
            alignments[i] = path
        return guided_attention_loss(attentions[layer][:, head], tokens.modality_mask, tokens.labels, alignments)

    def attach_ctc_head(self, vocab_size: int) -> None:
        """Add a Linear(d_model → vocab + blank) on the encoder output for an auxiliary CTC loss."""
        d_model = self.encoder.config.d_model
        self.ctc_head = nn.Linear(d_model, vocab_size + 1).to(device=self.device, dtype=self.dtype)

    def ctc_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) encoder states → (B, T, vocab + 1) float32 CTC log-probabilities (blank last)."""
        return F.log_softmax(self.ctc_head(states).float(), dim=-1)

    def ctc_loss(self, states: torch.Tensor, lengths: torch.Tensor, targets: list):
        """Token-mean CTC loss over the rows that have a target (blank = the last class); returns
        ``(loss, those rows, their log-probabilities (T, rows, C))``."""
        rows = [i for i, t in enumerate(targets) if t]
        if not rows:
            return states.sum() * 0.0, rows, None
        index = torch.tensor(rows, device=states.device)
        log_probs = self.ctc_log_probs(states.index_select(0, index)).transpose(0, 1)  # (T, B, C)
        flat = torch.tensor([tok for i in rows for tok in targets[i]], dtype=torch.long)
        target_lengths = torch.tensor([len(targets[i]) for i in rows], dtype=torch.long)
        loss = F.ctc_loss(log_probs, flat, lengths.index_select(0, index.to(lengths.device)).long().cpu(),
                          target_lengths, blank=log_probs.shape[-1] - 1, reduction="sum", zero_infinity=True)
        return loss / target_lengths.sum().clamp_min(1), rows, log_probs

    def generation_config(self, options: DecodingOptions, max_new_tokens: int | None = None) -> GenerationConfig:
        kwargs = dict(
            num_beams=options.num_beams,
            do_sample=options.do_sample,
            max_new_tokens=max_new_tokens or options.max_new_tokens,
            min_length=0,
            length_penalty=options.length_penalty,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            bos_token_id=None,
            num_return_sequences=1,
            early_stopping=False,
        )
        if options.do_sample:
            kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=0)
        if options.eos_bias:
            kwargs["sequence_bias"] = [[[self.eos_id], float(options.eos_bias)]]
        return GenerationConfig(**kwargs)

    @torch.inference_mode()
    def generate(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        options: DecodingOptions,
        max_new_tokens: int | None = None,
        streamer=None,
        logits_processor: list | None = None,
    ) -> list[list[int]]:
        """Generate from spliced embeddings; returns each row's new ids up to and including the first EOS.
        ``logits_processor``: extra Hugging Face logits processors (e.g. the CTC prefix scorer).

        Beam search shares one prefill per utterance (exact: the official ids are unchanged): HF copies each
        input row ``num_beams`` times *before* the prefill, so the audio + prompt would be computed once per
        beam. Instead the first S-1 positions are run once per row, the KV cache is repeated per beam (what
        HF would do to the inputs) and handed to ``generate``, which then computes only the last position.
        Off with :attr:`shared_prefill` = False; skipped under a static cache (:attr:`static_cache`, set by
        ``compile_model``).
        """
        from transformers import LogitsProcessorList

        kwargs = {}
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        elif self.shared_prefill and options.num_beams > 1 and embeds.shape[1] > 1:
            key, cache = self._shared_prefill(embeds, attention_mask, options.num_beams)
            kwargs[key] = cache
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=attention_mask.long(),
            generation_config=self.generation_config(options, max_new_tokens),
            streamer=streamer,
            logits_processor=LogitsProcessorList(logits_processor or []),
            **kwargs,
        )
        rows = []
        for row in out.tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id) + 1]
            rows.append(row)
        return rows

    def _shared_prefill(self, embeds: torch.Tensor, attention_mask: torch.Tensor, beams: int):
        """KV cache of the first S-1 positions, computed once per row and repeated ``beams`` times; returns
        ``(generate's cache keyword, cache)``."""
        decoder = self.llm.get_decoder()  # the base decoder, through a PEFT wrapper too
        key = cache_kwarg(decoder)
        mask = attention_mask.long()
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as HF derives them from the mask
        cache = new_cache(self.llm.config)
        decoder(inputs_embeds=embeds[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                use_cache=True, **{key: cache})
        cache.batch_repeat_interleave(beams)
        return key, cache
